"""Benchmark of ``edgecnn train --nproc 2`` (DistributedDataParallel, gloo) against one process on a CPU.

Two configurations of the same training run (MobileNetV2 0.35 on Fashion-MNIST at 32 px, AdamW,
global batch 128, the same seed and number of epochs), each a fresh ``edgecnn train`` process tree:

- ``1 process``: ``OMP_NUM_THREADS=2`` (both cores of this machine in one process's intra-op threads);
- ``2 processes``: ``--nproc 2`` with ``OMP_NUM_THREADS=1`` (64 images per process and step, gradients
  all-reduced over gloo).

Measured: training images/s (the training loop only, evaluation excluded: for 2 processes the
images of both over the slower one's time), wall seconds of the whole command (start-up, data,
evaluation and checkpoints included) and top-1 on the first ``--test-images`` of the test set after
the same epochs. The configurations run alternately (A B B A ...) so that the load of a shared machine falls
on both alike; the load average is recorded around every run.

    python benchmarks/studies/train_ddp.py --out /tmp/ddp-bench --train-images 3000 --test-images 2000 \
        --epochs 2 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from edgecnn.benchmarks.measure import machine_info
from edgecnn.io import write_text

RECIPE = ["mobilenet_v2", "--alpha", "0.35", "--res", "32", "--optimizer", "adamw", "--lr", "0.002",
          "--weight-decay", "0.01", "--batch-size", "128", "--warmup-epochs", "0.3", "--crop-scale", "1",
          "--val-split", "0", "--workers", "0", "--seed", "0"]
CONFIGS = {"1 process, 2 threads": ({"OMP_NUM_THREADS": "2"}, []),
           "2 processes, 1 thread each": ({"OMP_NUM_THREADS": "1"}, ["--nproc", "2"])}


def run_once(name: str, data: Path, epochs: int, out: Path) -> dict:
    """One ``edgecnn train`` command of configuration ``name``; its summary numbers."""
    env_extra, flags = CONFIGS[name]
    env = {**os.environ, **env_extra}
    cmd = [sys.executable, "-m", "edgecnn", "train", *RECIPE, "--data", str(data), "--epochs", str(epochs),
           "--out", str(out), "--overwrite", "--json", *flags]
    load_before = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout)
    return {"config": name, "wall_seconds": wall, "train_seconds": summary["train_seconds"],
            "train_images_per_s": summary["train_images_per_s"], "test_top1": summary["last_val_top1"],
            "test_top5": summary["last_val_top5"], "epochs": summary["epochs"],
            "val_top1_per_epoch": [h["val_top1"] for h in summary["history"]],
            "load_average_before": load_before, "load_average_after": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/studies/train_ddp.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/bench-ddp"), help="runs and data subset go here")
    p.add_argument("--train-images", type=int, default=3000, help="first N training images (default 3000)")
    p.add_argument("--test-images", type=int, default=2000, help="first N test images (default 2000)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="runs of each configuration, alternated")
    p.add_argument("--results", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "train_ddp.json")
    args = p.parse_args(argv)

    from edgecnn.data.datasets import subset_folder

    data = subset_folder(args.out / "data", args.train_images, args.test_images)
    names = list(CONFIGS)
    runs, start = [], time.perf_counter()
    for i in range(args.repeats):
        for name in names if i % 2 == 0 else names[::-1]:  # A B, B A, ...
            runs.append(run_once(name, data, args.epochs, args.out / f"run-{len(runs)}"))
            print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for name in names:
        mine = [r for r in runs if r["config"] == name]
        summary[name] = {"median_train_images_per_s": statistics.median(r["train_images_per_s"] for r in mine),
                         "median_wall_seconds": statistics.median(r["wall_seconds"] for r in mine),
                         "test_top1": [r["test_top1"] for r in mine]}
    one, two = (summary[n]["median_train_images_per_s"] for n in names)
    result = {
        "benchmark": "edgecnn train: 1 process (2 threads) vs --nproc 2 (DDP over gloo, 1 thread each)",
        "command": "python benchmarks/studies/train_ddp.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "recipe": RECIPE, "train_images": args.train_images, "test_images": args.test_images, "epochs": args.epochs,
        "machine": {**machine_info(), "torch": torch.__version__,
                    "note": "the configurations alternate, so a load from other jobs falls on both alike; "
                            "the load average around every run is in its row"},
        "summary": summary, "speedup_2_processes": two / one, "wall_seconds": time.perf_counter() - start,
        "runs": runs}
    write_text(args.results, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("summary", "speedup_2_processes", "wall_seconds")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
