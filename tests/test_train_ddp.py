"""edgecnn train with DistributedDataParallel: real processes (gloo on CPU) on real Fashion-MNIST images.

The slow tests start 2 worker processes each (torchrun's elastic agent), training a 0.35-width
MobileNetV2 at 32 px on 800 images (batch 32: 25 steps an epoch) with tests/ddp_probe.py as the
worker program where the test needs each rank's weights or a rank that dies mid-epoch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

from edgecnn.checkpoint import read_meta
from edgecnn.errors import EdgeCNNError
from edgecnn.train import TrainConfig, train
from edgecnn.train.distributed import LOST, Dist, _failure_line
from edgecnn.train.loader import EpochSampler
from edgecnn.train.trainer import LAST, STATE_FILE, load_state

REPO = Path(__file__).resolve().parents[1]
TINY = ["mobilenet_v2", "--alpha", "0.35"]
RUN = ["--res", "32", "--batch-size", "32", "--val-split", "0.2", "--optimizer", "sgd", "--lr", "0.05", "--warmup-epochs", "0.2",
       "--ema", "0.99", "--workers", "0", "--quiet"]
STEPS = 800 // 32  # 1,000 images less the 20% validation split, per global batch of 32
HANG_GUARD_S = 600  # a run that is not over by then hangs (each finishes in well under a minute alone)


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
           "OMP_NUM_THREADS": "1", "PROBE_DIR": str(tmp), **extra}
    env.pop("EDGECNN_LAUNCHED", None)
    return env


def _torchrun(tmp: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(REPO / "tests" / "ddp_probe.py"), *map(str, args)]
    return subprocess.run(cmd, env=_env(tmp, **extra), capture_output=True, text=True, timeout=HANG_GUARD_S)


# ---------------------------------------------------------------- no processes

def test_shards_of_a_global_batch_are_the_one_process_batch():
    n, batch, world, start = 103, 12, 3, 24  # start: a run resumed after 2 steps
    one = EpochSampler(n, seed=5)
    shards = [EpochSampler(n, seed=5, shard=(r, world)) for r in range(world)]
    for s in (one, *shards):
        s.set_epoch(2, start=start)
    whole, parts = list(one), [list(s) for s in shards]
    local = batch // world
    for k in range(len(whole) // batch):
        joined = sorted(x for p in parts for x in p[k * local:(k + 1) * local])
        assert joined == sorted(whole[k * batch:(k + 1) * batch])  # (index, augmentation seed) pairs
    assert sum(len(s) for s in shards) == len(one) == n - start


def test_batch_must_split_evenly(fmnist_small, tmp_path, cli):
    with pytest.raises(EdgeCNNError, match="does not split evenly among 3"):
        Dist(world=3).local_batch(128)
    r = cli("train", *TINY, "--data", fmnist_small, "--out", tmp_path / "run", "--batch-size", "100", "--nproc", "3")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "does not split evenly" in r.err, r
    assert not (tmp_path / "run").exists()


def test_the_failure_line_names_the_rank_that_failed_first(tmp_path):
    def failure(rank: int, exitcode: int, message: str | None) -> ProcessFailure:
        path = tmp_path / f"error{rank}.json"
        if message is not None:
            path.write_text(json.dumps({"message": message, "timestamp": 100}))
        return ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=exitcode, error_file=str(path))

    lost = failure(0, 1, f"rank 0/4: {LOST} (Connection closed by peer)")
    stopped = failure(1, -15, None)  # the agent's SIGTERM to the survivors ...
    interrupted = failure(3, 143, "rank 3/4: interrupted in epoch 1")  # ... or their exit on it
    own = failure(2, 2, "rank 2/4: cannot read image 17")
    line, code = _failure_line({0: lost, 1: stopped, 3: interrupted, 2: own}, 4)
    assert (line, code) == ("rank 2/4: cannot read image 17; all 4 processes were stopped", 2)
    line, code = _failure_line({0: lost, 2: failure(2, -9, None)}, 4)
    assert line.startswith("rank 2/4 (pid 1002) was killed by SIGKILL") and code == 1


# ---------------------------------------------------------------- real processes

@pytest.fixture(scope="module")
def ddp_run(fmnist_small, tmp_path_factory) -> Path:
    """One epoch in 2 processes under plain torchrun; each rank's final weights beside the run."""
    tmp = tmp_path_factory.mktemp("ddp")
    r = _torchrun(tmp, "train", *TINY, "--data", fmnist_small, "--epochs", "1", *RUN, "--out", tmp / "run")
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp


@pytest.mark.slow
def test_two_processes_end_identical_and_rank_0_saves_it(ddp_run, cli):
    run = ddp_run / "run"
    for name in ("model", "eval"):  # the trained weights and the EMA that is evaluated and saved
        rank0, rank1 = (load_file(ddp_run / f"rank{r}-{name}.safetensors") for r in (0, 1))
        assert rank0.keys() == rank1.keys()
        assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), name
    rows = [json.loads((ddp_run / f"rank{r}-history.json").read_text()) for r in (0, 1)]
    assert rows[0] == rows[1] and len(rows[0]) == 1  # every rank reports the same (all-reduced) metrics
    saved, rank0 = load_file(run / LAST), load_file(ddp_run / "rank0-eval.safetensors")
    assert saved.keys() == rank0.keys() and all(torch.equal(saved[k], rank0[k]) for k in saved)
    meta = read_meta(run / LAST)
    assert meta.extra["distributed"] == {"world_size": 2, "backend": "gloo", "global_batch_size": 32,
                                         "batch_size_per_process": 16}
    assert meta.extra["epoch"] == 1 and {p.name for p in run.iterdir()} == {
        "best.ckpt", "last.ckpt", STATE_FILE, "metrics.csv", "curves.png"}
    state = load_state(run)
    assert state["scheduler"]["last_epoch"] == STEPS and state["history"][0]["train_images"] == STEPS * 32
    # 1 process evaluates the checkpoint on the same ~200 validation images as the 2 shards did; the
    # batches differ (float summation order), so allow 1 image to flip on a near-tie
    r = cli("eval", run / LAST, "--split", "val", "--workers", "0", "--json")
    assert r.code == 0, r
    report = json.loads(r.out)
    assert report["images"] == sum(c["images"] for c in report["per_class"].values())
    assert abs(report["top1"] - meta.extra["val_top1"]) * report["images"] <= 1 + 1e-6


@pytest.mark.slow
def test_resume_in_one_process_then_in_two(ddp_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(ddp_run / "run", out)
    steps = []
    cfg = TrainConfig.from_dict({**load_state(out)["config"], "epochs": 2, "out": str(out)})
    result = train(cfg, resume=True, progress=False, callbacks=[lambda s: steps.append(s["global_step"])])
    assert steps[0] == STEPS + 1 and steps[-1] == 2 * STEPS  # continues from the saved global step
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert load_state(out)["distributed"]["world_size"] == 1
    # and back to 2 processes, through edgecnn train --nproc
    cmd = [sys.executable, "-m", "edgecnn", "train", *TINY, "--resume", str(out), "--epochs", "3", "--nproc", "2",
           "--json"]
    r = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)  # rank 0 alone reports
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]
    state = load_state(out)
    assert state["scheduler"]["last_epoch"] == 3 * STEPS and state["distributed"]["world_size"] == 2
    assert read_meta(out / LAST).extra["distributed"]["batch_size_per_process"] == 16


@pytest.mark.slow
@pytest.mark.parametrize("how, expect, code", [
    ("PROBE_KILL", "rank 1/2 (pid {pid}) was killed by SIGKILL; all 2 processes were stopped", 1),
    ("PROBE_FAIL", "rank 1/2: probe: image 17 cannot be read; all 2 processes were stopped", 2)])
def test_one_failing_rank_ends_the_run_with_one_line(fmnist_small, tmp_path, how, expect, code):
    launcher = ("import sys\nfrom edgecnn.errors import EdgeCNNError\nfrom edgecnn.train.distributed import launch\n"
                "try:\n    launch(2, sys.argv[1:], module='ddp_probe')\nexcept EdgeCNNError as e:\n"
                "    print(f'edgecnn: error: {e}', file=sys.stderr)\n    sys.exit(e.exit_code)\n")
    cmd = [sys.executable, "-c", launcher, "train", *TINY, "--data", str(fmnist_small), "--epochs", "1", *RUN,
           "--out", str(tmp_path / "run")]
    r = subprocess.run(cmd, env=_env(tmp_path, **{how: "1"}), capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert r.returncode == code, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr[-3000:]
    pid = lines[0].split("(pid ")[1].split(")")[0] if "(pid " in lines[0] else ""
    assert lines[0] == "edgecnn: error: " + expect.format(pid=pid)
    assert not (tmp_path / "run" / LAST).exists()  # nothing half-done was saved


@pytest.mark.slow
@pytest.mark.xdist_group("convert")
def test_checkpoint_of_two_processes_exports(ddp_run, tmp_path, cli):
    r = cli("export", ddp_run / "run" / LAST, "--quantize", "float32", "--out", tmp_path / "x", "--no-latency",
            "--json")
    assert r.code == 0, r
    (file,) = json.loads(r.out)["files"]
    assert file["verification"]["passed"] and (tmp_path / "x" / "labels.txt").read_text().split()[0] == "T-shirt/top"
