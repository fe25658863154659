"""Signals and the output folder: SIGINT, SIGTERM and SIGHUP end edgecnn in one line with 128 + N,
leaving nothing behind; ``--out`` never replaces a file; outputs honour the umask.

The subprocess tests start the real ``python -m edgecnn`` with the three signals at their defaults
(as a terminal starts it), whatever this test run inherited.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

import edgecnn
from edgecnn.checkpoint import CheckpointMeta, save_checkpoint
from edgecnn.converters.registry import BACKENDS
from edgecnn.data.transforms import Preprocess
from edgecnn.io import atomic_dir, atomic_path, write_text
from edgecnn.signals import Interrupted, exit_status, handling

REPO = Path(__file__).resolve().parents[1]
IMPORT_LINE = "import time:"  # what `python -X importtime` adds to stderr


def _default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _edgecnn(*args: str, env: dict | None = None, python_flags: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *python_flags, "-m", "edgecnn", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                            preexec_fn=_default_signals)


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(IMPORT_LINE)]


def test_handling_restores_handlers_and_keeps_ignored_signals_ignored(catchable_signals):
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with pytest.raises(Interrupted) as info:
        with handling():
            os.kill(os.getpid(), signal.SIGHUP)  # ignored: nohup keeps its promise
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # not reached: the handler raises as soon as the signal arrives
    assert info.value.signum == signal.SIGTERM and exit_status(info.value) == 143
    assert exit_status(KeyboardInterrupt()) == 130
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_sighup_during_export_is_one_line_129_and_leaves_nothing(cli, monkeypatch, tmp_path, catchable_signals):
    class Hangup:
        def convert(self, job, wanted):
            (Path(job.scratch) / "half.tflite").write_bytes(b"x")
            os.kill(os.getpid(), signal.SIGHUP)
            return [], {}

    monkeypatch.setitem(BACKENDS, "litert", dataclasses.replace(BACKENDS["litert"], load=Hangup))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    r = cli("export", "mobilenet", "--alpha", "0.25", "--res", "64", "--out", tmp_path / "out" / "m", "--json")
    assert (r.code, r.out, r.err) == (129, "", "edgecnn: interrupted (SIGHUP); no partial output was kept\n")
    assert list((tmp_path / "out").iterdir()) == [] and list((tmp_path / "tmp").iterdir()) == []
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_sigint_while_the_parser_imports_torch_is_one_line():
    proc = _edgecnn("models", python_flags=("-X", "importtime"))
    seen_cli = False
    for line in proc.stderr:  # each finished import, in order; main() starts right after edgecnn.cli
        if seen_cli:
            break  # an import inside main(): the parser is loading the sub-commands (torch)
        seen_cli = line.rstrip().endswith("| edgecnn.cli")
    assert seen_cli, "the import of edgecnn.cli was not reported"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert _error_lines(err) == ["edgecnn: interrupted (SIGINT); no partial output was kept"]
    assert out == ""


@pytest.mark.slow
def test_sigterm_during_a_real_export_ends_the_converter_and_leaves_nothing(tmp_path):
    scratch, out_parent = tmp_path / "tmp", tmp_path / "out"
    scratch.mkdir()
    proc = _edgecnn("export", "mobilenet", "--alpha", "0.25", "--res", "64", "--converter", "onnx2tf",
                    "--quantize", "float32", "--out", out_parent / "m", "--json", env={"TMPDIR": str(scratch)})
    parent, converter = psutil.Process(proc.pid), []
    deadline = time.monotonic() + 600  # a guard against a hang, not a measurement
    while not converter and proc.poll() is None and time.monotonic() < deadline:
        converter = [c for c in parent.children(recursive=True) if "onnx2tf" in " ".join(_cmdline(c))]
        time.sleep(0.05)
    assert converter, f"onnx2tf never started: {proc.communicate()[1][-2000:]}"
    family = parent.children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    assert _error_lines(err) == ["edgecnn: interrupted (SIGTERM); no partial output was kept"] and out == ""
    assert list(out_parent.iterdir()) == []  # no .m.*.part folder
    # no scratch folder with converter.log (torch and TF keep their own caches in TMPDIR)
    assert not [p for p in scratch.iterdir() if p.name.startswith("edgecnn-")]
    assert not list(scratch.rglob("converter.log"))
    assert not [p for p in family if _alive(p)]  # the onnx2tf process (and anything it started) ended


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# --- the output folder ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["file", "link"])
def test_out_on_a_file_or_link_is_refused_and_nothing_is_touched(cli, tmp_path, kind):
    mine = tmp_path / "notes.txt"
    mine.write_text("my notes\n")
    target = mine if kind == "file" else tmp_path / "link"
    if kind == "link":
        (tmp_path / "real").mkdir()
        target.symlink_to(tmp_path / "real")
    before = sorted(p.name for p in tmp_path.iterdir())
    r = cli("export", "mobilenet", "--alpha", "0.25", "--res", "64", "--out", target)
    assert r.code == 2 and r.out == "" and r.err.count("\n") == 1, r
    assert r.err.startswith(f"edgecnn: error: {target} ")
    assert mine.read_text() == "my notes\n" and sorted(p.name for p in tmp_path.iterdir()) == before
    with pytest.raises(edgecnn.EdgeCNNError, match="not a folder|symbolic link"):
        with atomic_dir(target):
            pass  # the library refuses too, before writing anything
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_dir(tmp_path / "export") as folder:
            write_text(folder / "report.json", "{}\n")
            save_checkpoint(folder / "best.ckpt", edgecnn.create_model("lenet5", num_classes=10),
                            CheckpointMeta(model="lenet5", knobs={}, num_classes=10, in_chans=1,
                                           preprocess=Preprocess(res=32, mean=(0.5,), std=(0.5,), in_chans=1)))
            with atomic_path(folder / "last.state.pt") as tmp:
                torch.save({"step": 1}, tmp)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "export", *(tmp_path / "export").iterdir()]}
    assert modes == {"export": 0o777 & ~umask, "report.json": 0o666 & ~umask, "best.ckpt": 0o666 & ~umask,
                     "last.state.pt": 0o666 & ~umask}
