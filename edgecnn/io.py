"""Atomic file output: readers never see a half-written file, interrupts leave none behind.

What is written gets the usual permissions: 0666 (files) and 0777 (folders) less the umask.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from edgecnn.errors import EdgeCNNError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else delete it.

    >>> with atomic_path("out/model.tflite") as tmp:
    ...     tmp.write_bytes(data)
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise EdgeCNNError(f"cannot write to {path.parent}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600, and so do writers that recreate the file
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise EdgeCNNError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    """This process's umask, read from /proc on Linux (setting it to read it races with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns ``path``."""
    return write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a whole output folder in a temporary sibling, then swap it into place.

    An existing folder at ``path`` is replaced only once the new one is complete; on any error
    or interrupt the temporary folder is removed and the old one is left untouched.
    Anything else at ``path`` (a file, a symbolic link) is refused before anything is written.
    """
    path = Path(path)
    check_output_dir(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    except OSError as exc:
        raise EdgeCNNError(f"cannot write to {path.parent}: {exc.strerror or exc}") from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_output_dir(path: str | Path) -> None:
    """Raise :class:`EdgeCNNError` unless ``path`` is missing or a real folder (not a file, not a link)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise EdgeCNNError(f"cannot write {path}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(mode):
        raise EdgeCNNError(f"{path} is a symbolic link; give the output folder's real path")
    if not stat.S_ISDIR(mode):
        raise EdgeCNNError(f"{path} exists and is not a folder; give a folder path (it is replaced whole)")
