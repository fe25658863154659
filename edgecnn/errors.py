"""One exception type for every user-facing failure, and the exit statuses of the ``edgecnn`` command.

The CLI prints ``edgecnn: error: <message>`` and exits with ``exit_code`` (2 for bad input,
1 for a failed check); library callers catch :class:`EdgeCNNError`.
"""

EXIT_OK = 0
EXIT_VERIFICATION = 1  # an exported file failed verification
EXIT_USAGE = 2  # bad arguments or bad input files
EXIT_INTERNAL = 70  # a bug in edgecnn (sysexits.h EX_SOFTWARE); the traceback goes to a log file
# A signal ends a command with 128 + its number (130 SIGINT, 143 SIGTERM, 129 SIGHUP): edgecnn.signals.


class EdgeCNNError(Exception):
    """A problem the user can fix: bad arguments, bad files, a failed verification."""

    exit_code = EXIT_USAGE


class VerificationError(EdgeCNNError):
    """An exported file disagrees with the PyTorch model by more than its tolerance."""

    exit_code = EXIT_VERIFICATION


def shorten(text: object, limit: int = 80) -> str:
    """``text`` for a one-line message: at most ``limit`` characters, with the full length when cut."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
