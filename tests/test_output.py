"""Output a person can read: tables that fit the terminal without cutting names, a spinner that keeps
moving while converters block, and the paths and next commands after an export."""

from __future__ import annotations

import json
import os
import sys
import threading


from edgecnn.console import print_table

FAMILY = "efficientnet_lite"  # the longest names of the zoo (issue 11: cut to `efficientnet_l…`)


def _lines(text: str) -> list[str]:
    return text.splitlines()


def _zoo_names(family: str | None = None) -> list[str]:
    from edgecnn.models import list_models

    return list_models(family)


def test_models_at_80_columns_fit_and_keep_every_name_whole(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    r = cli("models", "--family", FAMILY)
    assert r.code == 0, r
    assert max(len(line) for line in _lines(r.out)) <= 80
    cells = {c.strip() for line in _lines(r.out) for c in line.split("│")}
    names = _zoo_names(FAMILY)
    assert names and set(names) <= cells  # each name whole, in a cell of its own
    assert "aliases" not in r.out.split("\n", 2)[1] and "--wide shows them" in r.out


def test_piped_output_has_full_names_and_every_column(cli, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)  # capsys' stdout is not a terminal: no width limit
    r = cli("models", "--family", FAMILY)
    assert r.code == 0, r
    cells = {c.strip() for line in _lines(r.out) for c in line.split("│")}
    assert set(_zoo_names(FAMILY)) <= cells
    assert "aliases" in r.out and "…" not in r.out and "--wide" not in r.out


def test_wide_shows_every_column_whatever_the_width(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    r = cli("models", "--family", FAMILY, "--wide")
    assert r.code == 0, r
    header = next(line for line in _lines(r.out) if "name" in line and "MACs" in line)
    assert "aliases" in header and "family" in header and "…" not in r.out


def test_every_table_command_takes_wide(cli):
    for command in ("models", "info", "train", "eval", "export", "quantize", "bench", "pareto"):
        r = cli(command, "--help")
        assert r.code == 0 and "--wide" in r.out, command


def test_optional_columns_go_first_named_first_and_nothing_is_ever_cut(capsys, monkeypatch):
    rows = [["efficientnet_lite4_with_a_long_suffix", "a" * 25, "b" * 30, "12.5"]]  # 37 + 25 + 30 + 4 + 13 borders
    monkeypatch.setenv("COLUMNS", "80")
    print_table("t", ["name", "second", "third", "ms"], rows, optional=["third", "second"])
    out = capsys.readouterr().out
    assert "b" * 30 not in out and "a" * 25 in out and "left out to fit 80 columns: third (" in out
    assert max(len(line) for line in _lines(out)) <= 80
    monkeypatch.setenv("COLUMNS", "20")  # narrower than the name alone: printed wider, never cut
    print_table("t", ["name", "second", "third", "ms"], rows, optional=["third", "second"])
    out = capsys.readouterr().out
    assert "efficientnet_lite4_with_a_long_suffix" in out and "12.5" in out and "…" not in out


def test_bench_table_at_80_columns_keeps_model_runtime_precision_and_median(capsys, monkeypatch):
    from edgecnn.benchmarks.sweep import print_rows

    rows = [{"model": name, "runtime": "litert", "precision": "int8", "converter": "litert", "threads": 4,
             "status": "ok", "median_ms": 1.25 + i, "p90_ms": 1.5, "p99_ms": 2.0, "std_ms": 0.1,
             "init_ms": 10.0, "first_ms": 3.0, "peak_memory_bytes": 2**20, "file_bytes": 2**21,
             "macs": 300e6, "gmacs_per_s": 200.0} for i, name in enumerate(_zoo_names(FAMILY))]
    monkeypatch.setenv("COLUMNS", "80")
    print_rows(rows, "local: a CPU")
    out = capsys.readouterr().out
    assert max(len(line) for line in _lines(out)) <= 80
    cells = {c.strip() for line in _lines(out) for c in line.split("│")}
    assert {r["model"] for r in rows} <= cells and {"1.25", "litert", "int8"} <= cells
    print_rows(rows, "local: a CPU", wide=True)
    assert "GMAC/s" in capsys.readouterr().out


def _report(tmp_path, **over):
    from edgecnn.pipelines.export import ExportReport

    out = tmp_path / "exports" / "mobilenet_v1_0.25_64"
    files = [{"name": f"mobilenet_v1_0.25_64_{s}.tflite", "path": str(out / f"mobilenet_v1_0.25_64_{s}.tflite"),
              "suffix": s, "precision": p, "io": io, "bytes": 1000, "verification": None, "latency_ms": 1.0,
              "transpose": 0, "dequantize": 0, "float_ops": 0}
             for s, p, io in (("float32", "float32", "float32"), ("int8_uint8io", "int8", "uint8"))]
    fields = dict(model="mobilenet_v1", name="mobilenet_v1_0.25_64", knobs={"alpha": 0.25}, res=64,
                  num_classes=1000, in_chans=3, params=1, macs=1, weights="random initialisation",
                  trained=False, converter="litert", layout="nhwc", input="pixel values 0-255",
                  preprocess={}, calibration=None, out_dir=str(out), files=files,
                  extra_files=["labels.txt"], stages={"convert": 1.0})
    return ExportReport(**{**fields, **over})


def test_export_summary_names_full_paths_and_next_commands(tmp_path, capsys, monkeypatch):
    from edgecnn.cli.export_cmd import print_summary

    monkeypatch.chdir(tmp_path)
    report = _report(tmp_path.relative_to(tmp_path))  # a relative --out, as users type it
    monkeypatch.setenv("COLUMNS", "80")
    print_summary(report)
    out = capsys.readouterr().out
    folder = (tmp_path / "exports" / "mobilenet_v1_0.25_64").resolve()
    for name in ("mobilenet_v1_0.25_64_float32.tflite", "mobilenet_v1_0.25_64_int8_uint8io.tflite",
                 "labels.txt", "report.json"):
        assert f"  {folder / name}\n" in out
    assert f"edgecnn bench {folder}" in out
    app = folder / "mobilenet_v1_0.25_64_int8_uint8io.tflite"  # camera bytes in: what apps feed
    assert f"edgecnn eval {app} --data DIR" in out
    assert f"ImageClassifier.create_from_model_path({str(app)!r})" in out
    assert "class probabilities" in out


def test_export_json_lists_the_written_paths(tmp_path, monkeypatch, capsys):
    from edgecnn.cli import export_cmd

    report = _report(tmp_path)
    monkeypatch.setattr("edgecnn.pipelines.export.export", lambda *a, **k: report)
    args = export_cmd_args(json_mode=True)
    assert export_cmd.run(args) == 0
    out = json.loads(capsys.readouterr().out)
    folder = (tmp_path / "exports" / "mobilenet_v1_0.25_64").resolve()
    assert out["written"] == [str(folder / n) for n in ("mobilenet_v1_0.25_64_float32.tflite",
                                                        "mobilenet_v1_0.25_64_int8_uint8io.tflite",
                                                        "labels.txt", "report.json")]
    assert out["scores"] == "softmax"


def export_cmd_args(json_mode: bool):
    from edgecnn.cli import build_parser

    return build_parser().parse_args(["export", "mobilenet"] + (["--json"] if json_mode else []))


def test_status_shows_elapsed_seconds():
    from rich.console import Console

    from edgecnn.pipelines.export import _Elapsed

    elapsed = _Elapsed("[bold]convert[/]: litert")
    elapsed.start -= 12.4  # as if made 12.4 s ago
    console = Console(width=80, record=True, file=open(os.devnull, "w"))
    console.print(elapsed)
    assert console.export_text().strip() == "convert: litert  12 s"


def test_spinner_keeps_drawing_while_converter_output_is_captured(tmp_path, monkeypatch):
    """The status line draws from rich's refresh thread to the terminal, while the converter's
    own output (fd 2 and sys.stderr redirected to converter.log) goes to the log."""
    from rich.live import _RefreshThread

    from edgecnn.converters.base import captured_output
    from edgecnn.pipelines.export import _Stages

    master, slave = os.openpty()
    terminal = os.fdopen(slave, "w")
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setenv("TERM", "xterm")
    log = tmp_path / "converter.log"
    stages = _Stages(show=True)
    stages.console.file = terminal
    drawn: list[bytes] = []
    reader = threading.Thread(target=lambda: _drain(master, drawn), daemon=True)
    reader.start()
    with stages("convert", "litert: float32"):
        with captured_output(log, verbose=False):
            refreshers = [t for t in threading.enumerate() if isinstance(t, _RefreshThread)]
            assert refreshers and all(t.is_alive() for t in refreshers)
            print("converter noise", file=sys.stderr)
    terminal.flush()
    terminal.close()
    reader.join(timeout=5)
    text = b"".join(drawn).decode(errors="replace")
    assert "convert" in text and " s" in text and "converter noise" not in text
    assert "converter noise" in log.read_text() and "litert: float32" not in log.read_text()


def _drain(fd: int, into: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the terminal's other end closed
            return
        if not chunk:
            return
        into.append(chunk)
