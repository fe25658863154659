"""Internal errors: one line on stderr, the traceback in a log file, exit status 70 (EX_SOFTWARE)."""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

from edgecnn import __version__
from edgecnn.errors import EXIT_INTERNAL, shorten


def log_dir() -> Path:
    """``$XDG_CACHE_HOME/edgecnn/logs``, else ``~/.cache/edgecnn/logs``."""
    cache = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(cache) if os.path.isabs(cache) else Path.home() / ".cache") / "edgecnn" / "logs"


def internal_error(exc: BaseException) -> int:
    """Report a bug: the traceback goes to a new log file, stderr gets one line naming it."""
    from edgecnn.io import write_text  # here: io pulls in nothing heavy, but keep main's imports lean

    text = (f"edgecnn {__version__}, Python {sys.version.split()[0]}\nargv: {sys.argv!r}\n"
            f"time: {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n\n" + "".join(traceback.format_exception(exc)))
    path = log_dir() / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        write_text(path, text)
        where = f"the traceback is in {path}"
    except Exception:  # no writable cache: the traceback on stderr is better than none
        sys.stderr.write(text)
        where = "the traceback is above"
    first = (str(exc).strip().splitlines() or [""])[0]
    print(f"edgecnn: error: internal error ({type(exc).__name__}: {shorten(first, 200)}); {where}; "
          f"please report it", file=sys.stderr)
    return EXIT_INTERNAL
