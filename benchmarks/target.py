"""Where points run: the :class:`Target` protocol of this machine, a board over ssh and a phone over adb.

Every target has the same life: ``prepare()`` (connect, ship what it needs, describe the machine in
the :data:`MACHINE_FIELDS` shape), ``points(files, threads, protocol)`` (the points it would run, made by
:func:`~edgecnn.benchmarks.sweep.make_points`), ``run(points) -> rows`` (a resumable sweep, one
process per point) and ``close()`` (remove what ``prepare()`` left). :class:`LocalTarget` is this
machine; :class:`~edgecnn.benchmarks.remote_ssh.SSHTarget` and
:class:`~edgecnn.benchmarks.remote_adb.AdbTarget` are the remote ones. A new target subclasses
:class:`Target` and is named in :func:`edgecnn.pipelines.bench.target_from_url`.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from pathlib import Path

from edgecnn.benchmarks.measure import Protocol, machine_info
from edgecnn.benchmarks.runtimes import run_point
from edgecnn.benchmarks.sweep import available_here, file_fields, make_points, points_for_files, run_sweep

# What every target's prepare() returns (None where a target cannot tell): the machine's name, the
# device model (phones), CPU model, cores, cores this process may use, architecture, OS, the
# Python and NumPy that measure, and the 1-minute load average when prepared.
MACHINE_FIELDS = ("hostname", "device", "cpu", "cores", "cores_usable", "arch", "os", "python", "numpy",
                  "load_1min")


_COUNTS = ("cores", "cores_usable")


def machine(info: object) -> dict:
    """``info`` in the one machine shape: every :data:`MACHINE_FIELDS` key in that order, nothing else.

    A board's description is untrusted JSON: a core count that is not a positive integer, a load that
    is not a number, or any other field that is not a string becomes None.
    """
    info = info if isinstance(info, dict) else {}
    out = {}
    for k in MACHINE_FIELDS:
        v = info.get(k)
        if k in _COUNTS:
            ok = type(v) is int and v > 0
        elif k == "load_1min":
            ok = type(v) in (int, float) and v == v and v >= 0
        else:
            ok = isinstance(v, str)
        out[k] = v if ok else None
    return out


class Target(ABC):
    """A machine that measures points. Subclasses set ``label`` (the ``--target`` text rows carry),
    ``runtime`` (what a file runs with there) and ``device`` ('cpu', or an accelerator such as 'gpu'),
    and implement :meth:`prepare` and :meth:`run_point`."""

    label: str
    runtime: str
    device: str = "cpu"
    run_options: dict | None = None  # run flags every point carries (part of its identity)

    @abstractmethod
    def prepare(self) -> dict:
        """Get ready to measure; returns the machine in the :func:`machine` shape. Raises one line."""

    @abstractmethod
    def run_point(self, point: dict, timeout: float = 600.0) -> dict:
        """Measure one point; returns its row (an error row, never an exception, for a bad model)."""

    def close(self) -> None:
        """Remove what :meth:`prepare` left behind (nothing by default)."""

    def skip_reason(self, point: dict) -> str | None:
        """Why ``point`` is listed as skipped instead of measured (None: measure it)."""
        return point.get("skip")

    def points(self, files: list[Path], threads: list[int], protocol: Protocol, info: dict | None = None) -> list[dict]:
        """Points for model files at each thread count; ``info``: an export report's fields
        (see :func:`~edgecnn.benchmarks.sweep.file_fields`)."""
        return [p for f in files for p in make_points(self.runtime, threads, protocol, self.device, self.label,
                                                      self.run_options, **file_fields(Path(f), info))]

    def run(self, points: list[dict], results: Path | None = None, timeout: float = 600.0,
            progress: bool = False) -> list[dict]:
        """Measure ``points`` (resuming from the ``results`` JSONL, rewritten after each); their rows."""
        return run_sweep(points, results, timeout, runner=lambda p: self.run_point(p, timeout),
                         progress=progress, skip=self.skip_reason)

    def __enter__(self) -> "Target":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalTarget(Target):
    """This machine: every runtime of :data:`~edgecnn.benchmarks.runtimes.RUNTIMES` that is installed,
    each point in a fresh ``python -m edgecnn.benchmarks.worker`` (``python``: the interpreter)."""

    label = "local"

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python
        self._available = available_here()

    def skip_reason(self, point: dict) -> str | None:
        """A runtime that is not installed here, or the point's own ``skip`` reason."""
        return self._available(point)

    def prepare(self) -> dict:
        return machine(machine_info())

    def run_point(self, point: dict, timeout: float = 600.0) -> dict:
        return run_point(point, timeout, self.python)

    def points(self, files: list[Path], threads: list[int], protocol: Protocol, info: dict | None = None,
               spec: dict | None = None, runtimes: list[str] | None = None,
               precisions: list[str] | None = None) -> list[dict]:
        """Points for files on every runtime that runs them (``runtimes``: only those), plus the zoo
        model's own runtimes when ``spec`` is known; see :func:`~edgecnn.benchmarks.sweep.points_for_files`."""
        return points_for_files(list(map(Path, files)), threads, protocol, runtimes, spec, info, precisions)
