"""How fast is ``edgecnn export``, and how close are the int8 files of both back ends to float?

Part 1: ``edgecnn export mobilenet --alpha 0.5 --res 160`` end to end in a fresh process (import,
build, calibrate, convert, verify, measure, write), with the stage times; goal < 60 s on the
project's 2-core machine with the default back end.

Part 2: MobileNetV2 1.0 at 224 with torchvision's ImageNet weights, full int8 (float I/O) through
both back ends in one run: conversion time and top-1 agreement of int8 with PyTorch float on the
real photos available (scikit-image/scikit-learn photos, extended by seeded random crops).

    python benchmarks/studies/export_speed.py                      # both parts
    python benchmarks/studies/export_speed.py --part 1
    python benchmarks/studies/export_speed.py --part 2 --weights ~/.cache/edgecnn/test-assets/mobilenet_v2-b0353104.pth
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_WEIGHTS = Path.home() / ".cache" / "edgecnn" / "test-assets" / "mobilenet_v2-b0353104.pth"


def part1(out_root: Path) -> dict:
    """Wall time (s) of the default command in a fresh process, and its report."""
    cmd = [sys.executable, "-m", "edgecnn", "export", "mobilenet", "--alpha", "0.5", "--res", "160",
           "--out", str(out_root / "mobilenet_v1_0.50_160"), "--json"]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    load = os.getloadavg()[0]
    if proc.returncode != 0:
        raise SystemExit(f"export failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    report = json.loads(proc.stdout)
    print(f"\n== edgecnn export mobilenet --alpha 0.5 --res 160: {wall:.1f} s end to end (goal < 60 s), "
          f"{cpu:.1f} s CPU (user+sys, all threads); 1-min load average {load:.1f} on {os.cpu_count()} cores ==")
    print("stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report["stages"].items())
          + f"; imports and start-up {wall - sum(report['stages'].values()):.1f}")
    for f in report["files"]:
        v = f["verification"]
        judged = f"rel.err {v['max_rel_error']:.1e}" if v["checks"] else v["status"]
        print(f"  {f['name']:<40} {f['bytes'] / 1e6:6.2f} MB  {judged:<28} {f['latency_ms']:.2f} ms (2 threads)")
    return {"wall_s": wall, "cpu_s": cpu, "load": load, "stages": report["stages"], "files": report["files"]}


def agreement(path: Path, model, pp, pixels: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement, mean logit cosine) of a .tflite with the PyTorch model on ``pixels``."""
    from edgecnn.converters.tflite_runtime import TFLiteModel
    from edgecnn.converters.verify import compare, reference_logits

    m = compare(TFLiteModel(path, num_threads=2).predict_pixels(pixels, pp), reference_logits(model, pp, pixels))
    return m["top1_agreement"], m["cosine"]


def part2(out_root: Path, weights: Path, images: int, calib_samples: int) -> dict:
    """Both back ends, MobileNetV2 1.0/224 int8: conversion seconds and agreement with float."""
    import edgecnn
    from edgecnn.data.photos import sample_photos, photo_paths
    from edgecnn.data.transforms import Preprocess

    model = edgecnn.create_model("mobilenet_v2", weights=str(weights)).eval()
    pp = Preprocess.for_model(model, 224)
    pixels = np.stack([pp.to_uint8(p) for p in sample_photos(images, seed=2)])
    rows = {}
    for converter in ("litert", "onnx2tf"):
        t0 = time.perf_counter()
        report = edgecnn.export(model, quantize="int8", converter=converter, calib_samples=calib_samples,
                                out=out_root / converter, progress=False, measure=True, verify=False)
        total = time.perf_counter() - t0
        f = report.files[0]
        agree, cos = agreement(Path(report.out_dir) / f["name"], model, pp, pixels)
        rows[converter] = {"convert_s": report.stages["convert"], "export_s": total, "agreement": agree,
                           "cosine": cos, "bytes": f["bytes"], "latency_ms": f["latency_ms"],
                           "transpose": f["transpose"], "dequantize": f["dequantize"], "float_ops": f["float_ops"]}
    real = len(photo_paths())
    print(f"\n== MobileNetV2 1.0/224, torchvision weights, int8 (float I/O), {calib_samples} calibration images; "
          f"agreement on {images} images ({min(real, images)} real photos + seeded crops of them) ==")
    print(f"{'':<22}{'litert':>12}{'onnx2tf':>12}")
    for key, fmt in (("convert_s", "{:.1f} s"), ("agreement", "{:.1%}"), ("cosine", "{:.4f}"),
                     ("bytes", "{:,}"), ("latency_ms", "{:.2f} ms"), ("transpose", "{}"),
                     ("dequantize", "{}"), ("float_ops", "{}")):
        print(f"{key:<22}" + "".join(f"{fmt.format(rows[c][key]):>12}" for c in rows))
    print("reference (NOTES, 800 labelled ImageNet photos, 200 calibration images): onnx2tf 91.6% in 95 s, "
          "litert-torch PT2E 91.6% in 23 s")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", type=int, choices=(1, 2), help="run only this part")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                        help=f"torchvision's mobilenet_v2-b0353104.pth (default {DEFAULT_WEIGHTS})")
    parser.add_argument("--images", type=int, default=100, help="agreement images (default 100)")
    parser.add_argument("--calib-samples", type=int, default=32, help="calibration images (default 32)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="edgecnn-bench-") as tmp:
        if args.part in (None, 1):
            results["part1"] = part1(Path(tmp))
        if args.part in (None, 2):
            if not args.weights.is_file():
                raise SystemExit(f"no MobileNetV2 weights at {args.weights}; run the test suite once "
                                 "(it fetches them) or pass --weights")
            results["part2"] = part2(Path(tmp), args.weights, args.images, args.calib_samples)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
