"""One exception type for every user-facing failure.

The CLI prints ``edgecnn: error: <message>`` and exits with ``exit_code`` (2 for bad input,
1 for a failed check); library callers catch :class:`EdgeCNNError`.
"""


class EdgeCNNError(Exception):
    """A problem the user can fix: bad arguments, bad files, a failed verification."""

    exit_code = 2


class VerificationError(EdgeCNNError):
    """An exported file disagrees with the PyTorch model by more than its tolerance."""

    exit_code = 1
