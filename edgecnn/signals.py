"""SIGINT, SIGTERM and SIGHUP stop edgecnn one way: an :class:`Interrupted` exception.

The exception unwinds the stack, so every ``finally``, atomic write and temporary folder cleans up
and child processes started with ``subprocess.run`` are killed; the CLI then prints one line and
exits with 128 + the signal number: 130 (Ctrl-C), 143 (SIGTERM), 129 (SIGHUP). Standard library
only: the CLI installs it before importing anything heavy.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A signal asked edgecnn to stop. A ``KeyboardInterrupt``, so whatever cleans up after
    Ctrl-C cleans up after SIGTERM and SIGHUP too; ``signum`` says which signal it was."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        self.signum = int(signum)
        super().__init__(signal.Signals(self.signum).name)


def exit_status(exc: BaseException) -> int:
    """The shell's status for an interrupt: 128 + signal number (130 for a plain KeyboardInterrupt)."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


def signal_name(exc: BaseException) -> str:
    """``SIGTERM`` for an interrupt by SIGTERM; ``SIGINT`` for a plain KeyboardInterrupt."""
    return signal.Signals(exit_status(exc) - 128).name


def raise_interrupted(signum: int) -> None:
    """The default handler: stop now."""
    raise Interrupted(signum)


@contextlib.contextmanager
def handling(handler: Callable[[int], None] = raise_interrupted) -> Iterator[None]:
    """While the block runs, SIGINT, SIGTERM and SIGHUP call ``handler(signum)``; the previous
    handlers are restored afterwards.

    A signal ignored when the block starts stays ignored (``nohup``, a background job of a script),
    as GNU tools and Python's own Ctrl-C handling do. Outside the main thread nothing changes:
    Python runs signal handlers in the main thread only.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    try:
        for sig in SIGNALS:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, lambda signum, frame: handler(signum))
        yield
    finally:
        for sig, old in previous.items():  # None: a handler set outside Python, not restorable
            signal.signal(sig, signal.SIG_DFL if old is None else old)
