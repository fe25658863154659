"""Untrusted files and arguments: one ``edgecnn: error:`` line, a documented exit status, nothing written.

One test per class of input (parametrized over samples): bounded flags, checkpoint metadata,
export reports, resume states, image folders, metadata archives, JSON output, internal errors.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgecnn.cli import build_parser
from edgecnn.errors import EXIT_INTERNAL, EXIT_USAGE, EdgeCNNError

# the positional arguments (and required flags) each sub-command needs to reach its flag checks
NEEDS = {"models": [], "info": ["mobilenet"], "train": ["lenet5"], "eval": ["x.ckpt"], "export": ["mobilenet"],
         "quantize": ["mobilenet", "--calib-data", "x"], "bench": ["x.tflite"], "pareto": ["mobilenet", "--data", "x"]}


def _one_line(err: str, *parts: str) -> bool:
    lines = err.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("edgecnn: error: ") and all(p in lines[0] for p in parts)


def _numeric_flags() -> list[tuple[str, str, object]]:
    """(command, flag, bound) of every flag whose value is a number, in every sub-command."""
    sub = next(a for a in build_parser()._actions if a.choices and "export" in a.choices)
    flags = []
    for command, parser in sub.choices.items():
        for action in parser._actions:
            if action.option_strings and action.type is not None:
                flags.append((command, action.option_strings[-1], getattr(action.type, "bound", None)))
    return flags


NUMERIC_FLAGS = [f for f in _numeric_flags() if f[2] is not None]


def test_every_typed_flag_has_a_bound():
    """A flag typed as a plain int or float would take 1e9 or -1: every typed flag is bounded or a path."""
    unbounded = [(c, f) for c, f, b in _numeric_flags() if b is None]
    assert all(f in ("--exports-dir", "--results", "--csv", "--plot", "--benchmark-binary", "--quantize",
                     "--runtime") for _, f in unbounded), unbounded
    assert len(NUMERIC_FLAGS) >= 45


@pytest.mark.parametrize("command, flag, bound", NUMERIC_FLAGS, ids=[f"{c}{f}" for c, f, _ in NUMERIC_FLAGS])
def test_numeric_flags_refuse_out_of_range_values_in_one_line(cli, tmp_path, command, flag, bound):
    too_big = str(int(bound.hi) + 1) if bound.integer else str(bound.hi * 2 + 1)
    for value in (too_big, str(bound.lo - 1), "nan", "1e999"):
        r = cli(command, *NEEDS[command], flag, value)
        assert r.code == EXIT_USAGE, (value, r)
        assert _one_line(r.err, flag, bound.interval), (value, r.err)
        assert "usage:" not in r.err and not r.out
    assert not list(tmp_path.iterdir())


def test_alpha_zero_is_one_line_with_the_published_values(cli):
    r = cli("info", "mobilenet", "--alpha", "0")
    assert r.code == EXIT_USAGE and _one_line(r.err, "must be a number in (0, 4], got 0",
                                              "mobilenet_v1 0.25, 0.5, 0.75, 1.0")


@pytest.mark.parametrize("command", ["info", "export", "train", "quantize", "bench", "eval", "pareto"])
def test_a_ten_thousand_character_model_name_is_one_short_line(cli, tmp_path, command):
    name = "m" * 10_000
    extra = {"quantize": ["--calib-data", tmp_path], "train": ["--data", "fashion-mnist"],
             "pareto": ["--data", "fashion-mnist", "--out", tmp_path / "o"]}.get(command, [])
    r = cli(command, name, *extra)
    assert r.code == EXIT_USAGE and _one_line(r.err, "10000 characters"), r
    assert len(r.err) < 300


# ---------------------------------------------------------------- checkpoint metadata

GOOD_META = {"format": "edgecnn-checkpoint/1", "model": "lenet5_dense", "knobs": {}, "num_classes": 10,
             "in_chans": 1, "preprocess": {"res": 32, "mean": [0.5], "std": [0.25], "crop_pct": 1.0, "in_chans": 1},
             "labels": [str(i) for i in range(10)], "data": None, "extra": {}}


def _with(base: dict, path: str, value: object) -> dict:
    doc = json.loads(json.dumps(base))
    *parents, key = path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    if value is _DROP:
        del node[key]
    else:
        node[key] = value
    return doc


class _Drop:
    """The field is removed from the document (a stable repr keeps test ids the same in every worker)."""

    def __repr__(self) -> str:
        return "<missing>"


_DROP = _Drop()
BAD_META = [("knobs", [1]), ("knobs", {"alpha": 0.5}), ("model", "no_such_net"), ("model", 3),
            ("num_classes", "10"), ("num_classes", 0), ("in_chans", 3), ("labels", "abc"), ("labels", [1] * 10),
            ("preprocess", "x"), ("preprocess.res", 0), ("preprocess.res", 100_000), ("preprocess.mean", []),
            ("preprocess.std", [0]), ("preprocess.std", ["a"]), ("preprocess.crop_pct", 1e-9),
            ("format", _DROP), ("num_classes", _DROP), ("extra", [])]


def _checkpoint(path: Path, meta: object) -> Path:
    from safetensors.torch import save_file

    from edgecnn.models import create_model

    state = {k: v.contiguous() for k, v in create_model("lenet5_dense").state_dict().items()}
    save_file(state, str(path), metadata={"edgecnn": json.dumps(meta)})
    return path


def test_good_metadata_loads():
    from edgecnn.checkpoint import CheckpointMeta

    meta = CheckpointMeta.from_json(json.dumps(GOOD_META))
    assert meta.preprocess.res == 32 and meta.labels == GOOD_META["labels"]


@pytest.mark.parametrize("field, value", BAD_META, ids=[f"{f}={v!r}"[:40] for f, v in BAD_META])
def test_malformed_checkpoint_metadata_is_one_line_and_writes_nothing(cli, tmp_path, field, value):
    ckpt = _checkpoint(tmp_path / "bad.ckpt", _with(GOOD_META, field, value))
    out = tmp_path / "out"
    r = cli("export", ckpt, "--out", out, "--no-latency")
    assert r.code == EXIT_USAGE and _one_line(r.err, "bad.ckpt", field.split(".")[-1]), r
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.ckpt"]
    r = cli("eval", ckpt, "--data", "fashion-mnist")
    assert r.code == EXIT_USAGE and _one_line(r.err, "bad.ckpt"), r


def test_huge_alpha_in_metadata_is_refused_before_any_allocation(tmp_path):
    from edgecnn.weights import load_checkpoint

    meta = {**GOOD_META, "model": "mobilenet_v1", "knobs": {"alpha": 1e9}, "in_chans": 3,
            "preprocess": {"res": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "in_chans": 3}}
    with pytest.raises(EdgeCNNError, match=r"alpha must be a number in \(0, 4\], got 1000000000.0"):
        load_checkpoint(_checkpoint(tmp_path / "huge.ckpt", meta))


# ---------------------------------------------------------------- export reports

GOOD_REPORT = {"model": "mobilenet_v2", "name": "mv2", "knobs": {"alpha": 0.35}, "res": 32, "num_classes": 10,
               "in_chans": 3, "macs": 1000, "files": [{"name": "m_float32.tflite", "precision": "float32"}]}
BAD_REPORTS = [[], {"files": [1, 2]}, {"knobs": [1]}, _with(GOOD_REPORT, "knobs", [1]),
               _with(GOOD_REPORT, "files", [1, 2]), _with(GOOD_REPORT, "res", "32"),
               _with(GOOD_REPORT, "knobs", {"alpha": 1e9}), _with(GOOD_REPORT, "model", "nope"),
               _with(GOOD_REPORT, "files", [{"name": "../../m.tflite"}]),
               _with(GOOD_REPORT, "files", [{"name": "m.tflite", "precision": "int4"}])]


@pytest.mark.parametrize("report", BAD_REPORTS, ids=[json.dumps(r)[:40] for r in BAD_REPORTS])
def test_malformed_export_report_is_one_line_and_writes_nothing(cli, tmp_path, report):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "m_float32.tflite").write_bytes(b"TFL3")
    (folder / "report.json").write_text(json.dumps(report))
    results = tmp_path / "rows.jsonl"
    r = cli("bench", folder, "--runtime", "litert", "--results", results)
    assert r.code == EXIT_USAGE and _one_line(r.err, "report.json"), r
    assert not results.exists() and sorted(p.name for p in folder.iterdir()) == ["m_float32.tflite", "report.json"]


def test_good_export_report_gives_the_zoo_spec(tmp_path):
    from edgecnn.benchmarks.sweep import read_export_dir

    (tmp_path / "m_float32.tflite").write_bytes(b"TFL3")
    (tmp_path / "report.json").write_text(json.dumps(GOOD_REPORT))
    _, spec, info = read_export_dir(tmp_path)
    assert spec["knobs"] == {"alpha": 0.35} and info["files"]["m_float32.tflite"]["precision"] == "float32"


# ---------------------------------------------------------------- resume states

def _state(config: dict) -> dict:
    from edgecnn.train.trainer import STATE_FORMAT

    return {"format": STATE_FORMAT, "config": config, "epoch": 1, "step_in_epoch": 0, "num_classes": 2,
            "classes": ["a", "b"], "preprocess": {"res": 32, "mean": [0.5], "std": [0.25], "in_chans": 1},
            "model": {}, "optimizer": {}, "scheduler": {}, "scaler": {}, "ema": None, "rng": {},
            "best_top1": 0.5, "best_epoch": 1, "history": [{}], "partial": {}}


GOOD_CONFIG = {"model": "lenet5", "data": "fashion-mnist", "out": "run", "epochs": 2}
BAD_STATES = [("config", _DROP), ("config", "lenet5"), ("config.epochs", "x"), ("config.model", _DROP),
              ("config.seed", -1), ("config.knobs", [1]), ("config.optimizer", "adam"), ("config.lr", math.inf),
              ("config.workers", 100_000), ("epoch", -1), ("classes", "ab"), ("classes", ["a"]),
              ("preprocess", {}), ("optimizer", [1]), ("best_top1", "x"), ("history", {})]


def test_a_well_formed_state_passes_the_check():
    from edgecnn.train.trainer import check_state

    check_state(_state(GOOD_CONFIG), "state")


@pytest.mark.parametrize("field, value", BAD_STATES, ids=[f"{f}={v!r}"[:40] for f, v in BAD_STATES])
def test_malformed_resume_state_is_one_line_and_writes_nothing(cli, tmp_path, field, value):
    run = tmp_path / "run"
    run.mkdir()
    torch.save(_with(_state(GOOD_CONFIG), field, value), run / "last.state.pt")
    r = cli("train", "lenet5", "--resume", run)
    assert r.code == EXIT_USAGE and _one_line(r.err, "last.state.pt", field.split(".")[-1]), r
    assert sorted(p.name for p in run.iterdir()) == ["last.state.pt"]


# ---------------------------------------------------------------- image folders

def _folder(root: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / c / f"{i}.jpg")
    return root


def test_truncated_jpegs_are_skipped_and_counted(tmp_path):
    from edgecnn.data.datasets import open_dataset

    root = _folder(tmp_path / "data")
    data = (root / "cat" / "0.jpg").read_bytes()
    (root / "cat" / "0.jpg").write_bytes(data[: len(data) // 2])  # Image.verify() accepts this file
    ds = open_dataset(str(root), val_split=0.2, seed=0, max_unreadable=0.1)
    assert len(ds.unreadable) == 1 and "0.jpg" in ds.unreadable[0] and "truncated" in ds.unreadable[0]
    assert all(p.name != "0.jpg" or p.parent.name != "cat" for s in ds.splits.values() for p in s.paths)
    with pytest.raises(EdgeCNNError, match="1 of 12 images are unreadable"):
        open_dataset(str(root), val_split=0.2, seed=0, max_unreadable=0.0)


def test_an_image_failing_in_a_loader_worker_is_one_line(tmp_path):
    from edgecnn.data.datasets import open_dataset
    from edgecnn.data.transforms import Preprocess
    from edgecnn.train.loader import eval_loader

    root = _folder(tmp_path / "data")
    split = open_dataset(str(root), val_split=0.5, seed=0).split("val")
    split.paths[0].write_bytes(b"not an image any more")  # changed after the up-front check
    loader = eval_loader(split, Preprocess(res=32, mean=(0.5,) * 3, std=(0.25,) * 3), 2, workers=1)
    with pytest.raises(EdgeCNNError) as info:
        list(loader)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"cannot read image {split.paths[0]}")


# ---------------------------------------------------------------- .tflite metadata archives

def test_a_zip_bomb_label_file_is_refused_without_inflating_it(cli, tmp_path):
    from bench_helpers import tiny_tflite

    from edgecnn.converters.metadata import MAX_ASSOCIATED_BYTES, add_metadata, read_metadata

    model = add_metadata(tiny_tflite().read_bytes(), labels=[str(i) for i in range(10)], mean=(0.5,) * 3,
                         std=(0.25,) * 3, in_chans=3, name="tiny", description="", version="1")
    with zipfile.ZipFile(io.BytesIO(model)) as zf:
        start = min(i.header_offset for i in zf.infolist())
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("labels.txt", b"\n" * (4 * MAX_ASSOCIATED_BYTES))  # 64 MiB from ~64 KiB
    path = tmp_path / "bomb.tflite"
    path.write_bytes(model[:start] + bomb.getvalue())
    assert path.stat().st_size < MAX_ASSOCIATED_BYTES // 64
    with pytest.raises(EdgeCNNError, match="labels.txt' unpacks to 64 MiB"):
        read_metadata(path.read_bytes())
    r = cli("eval", path, "--data", "fashion-mnist")
    assert r.code == EXIT_USAGE and _one_line(r.err, "unpacks to 64 MiB"), r


# ---------------------------------------------------------------- output and internal errors

def test_json_output_is_strict_json_with_null_for_non_finite_numbers(capsys):
    from edgecnn.console import emit_json

    emit_json({"loss": math.nan, "rows": [math.inf, -math.inf, 1.5, np.float32("nan")], "n": 3})
    out = capsys.readouterr().out
    assert json.loads(out, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}")) == {
        "loss": None, "rows": [None, None, 1.5, None], "n": 3}


def test_an_internal_error_exits_70_with_one_line_and_a_log(cli, tmp_path, monkeypatch):
    import edgecnn.cli.models_cmd

    def broken(args):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(edgecnn.cli.models_cmd, "run_models", broken)
    r = cli("models")
    assert r.code == EXIT_INTERNAL and _one_line(r.err, "internal error (RuntimeError: boom)", str(tmp_path)), r
    (log,) = (tmp_path / "edgecnn" / "logs").iterdir()
    assert str(log) in r.err
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom" in text and "in broken" in text
