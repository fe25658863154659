"""Post-training int8 vs quantisation-aware training on a Fashion-MNIST checkpoint, on all 10,000 test images.

For one edgecnn checkpoint trained on Fashion-MNIST (e.g. from ``benchmarks/studies/train_fashion_mnist.py``):

1. ``edgecnn quantize CKPT --calib-data CALIB`` (post-training, the default recipe) and
   ``edgecnn quantize CKPT --calib-data CALIB --qat-epochs N`` (fine-tuning on the checkpoint's own
   training data); CALIB is 300 training images written as PNG files.
2. ``edgecnn export qat.ckpt --converter onnx2tf --quantize int8``: the QAT weights through the other
   back end (which calibrates its own ranges).
3. ``edgecnn eval`` of the float checkpoint and of every int8 file on the full test set.

Writes ``--results`` (default benchmarks/results/qat_fashion_mnist.json): top-1 per file, the cost in
points against float, seconds per step, and the commands. Run on an idle machine:

    .venv/bin/python benchmarks/studies/qat_fashion_mnist.py runs/bench-fmnist/mobilenet_v1/last.ckpt --out /tmp/qat
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from edgecnn.io import write_text


def edgecnn(*args: str) -> tuple[dict, float, str]:
    """``python -m edgecnn ARGS --json``: its JSON, the seconds it took and the command line."""
    cmd = [sys.executable, "-m", "edgecnn", *map(str, args), "--json"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout), time.perf_counter() - start, " ".join(["edgecnn", *map(str, args)])


def calibration_folder(folder: Path, n: int) -> Path:
    """The first ``n`` Fashion-MNIST training images as PNG files."""
    from edgecnn.data.datasets import open_dataset

    folder.mkdir(parents=True, exist_ok=True)
    pixels = open_dataset("fashion-mnist", val_split=0).split("train").pixels[:n]
    for i, p in enumerate(pixels):
        Image.fromarray(p[:, :, 0]).save(folder / f"{i:05d}.png")
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path, help="an edgecnn checkpoint trained on Fashion-MNIST")
    p.add_argument("--out", type=Path, required=True, help="folder for the exports")
    p.add_argument("--qat-epochs", type=int, default=1, help="QAT epochs (default 1)")
    p.add_argument("--qat-lr", type=float, default=1e-4, help="QAT peak learning rate (default 1e-4)")
    p.add_argument("--results", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "qat_fashion_mnist.json")
    args = p.parse_args(argv)
    calib = calibration_folder(args.out / "calib", 300)
    rows, commands = [], []

    def evaluate(path: Path, what: str, seconds: float | None = None) -> None:
        r, s, cmd = edgecnn("eval", path, "--data", "fashion-mnist")
        commands.append(cmd)
        rows.append({"what": what, "file": str(path), "bytes": path.stat().st_size, "top1": r["top1"],
                     "top5": r["top5"], "test_images": r["images"], "make_seconds": seconds})
        print(f"{what:<44} top-1 {100 * r['top1']:.2f}%", flush=True)

    evaluate(args.checkpoint, "float (PyTorch checkpoint)")
    ptq, s, cmd = edgecnn("quantize", args.checkpoint, "--calib-data", calib, "--out", args.out / "ptq")
    commands.append(cmd)
    evaluate(Path(ptq["export"]["files"][0]["path"]), f"int8 post-training ({ptq['method']}, litert)", s)
    qat, s, cmd = edgecnn("quantize", args.checkpoint, "--calib-data", calib, "--qat-epochs", args.qat_epochs,
                          "--qat-lr", args.qat_lr, "--out", args.out / "qat")
    commands.append(cmd)
    evaluate(Path(qat["export"]["files"][0]["path"]), f"int8 QAT {args.qat_epochs} epoch(s) (learned ranges, litert)", s)
    ckpt = args.out / "qat" / "qat.ckpt"
    onnx, s, cmd = edgecnn("export", ckpt, "--converter", "onnx2tf", "--quantize", "int8", "--calib-data", calib,
                           "--calib-samples", "200", "--out", args.out / "qat-onnx2tf")
    commands.append(cmd)
    evaluate(Path(onnx["files"][0]["path"]), "int8 QAT weights, onnx2tf (own calibration)", s)
    evaluate(ckpt, "float QAT weights (qat.ckpt, PyTorch)")
    float_top1 = rows[0]["top1"]
    for r in rows:
        r["points_vs_float"] = round(100 * (r["top1"] - float_top1), 2)
    report = {"benchmark": "int8 post-training vs quantisation-aware training, Fashion-MNIST test set",
              "checkpoint": str(args.checkpoint), "qat": qat["qat"], "rows": rows, "commands": commands,
              "machine": {"cpus": os.cpu_count(), "load_average_after": os.getloadavg()}}
    write_text(args.results, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
