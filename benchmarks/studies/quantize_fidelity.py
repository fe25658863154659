"""Which int8 recipe keeps a model closest to float, and how many calibration images it needs.

Part ``methods`` (MobileNetV2 1.0/224, torchvision's ImageNet weights by default): min-max,
percentile, histogram (L2), and histogram after bias correction, and after cross-layer
equalisation + bias correction, compared by top-1 agreement, logit cosine and SQNR against the
float model on real photos that did NOT calibrate: the photos of scikit-image/scikit-learn are
split by photo (whole photos held out, in ``--folds`` folds), and each photo contributes seeded
random views (``edgecnn.data.photos.sample_photos``: item i >= P is a crop of photo i mod P).
Part ``counts``: the default method with 50/100/200/500 calibration images. Part ``tflite``:
the chosen default converted to ``.tflite`` and run with ai-edge-litert, to check that the
PyTorch-simulated int8 numbers above match the real file. Part ``latency``: edgecnn's default
int8 file against the two files users made before edgecnn (litert-torch PT2E with its default
histogram ranges; onnx2tf's TFLite-converter int8), all written by ``edgecnn.export`` (pixel input,
NHWC, float I/O) and timed with LiteRT/XNNPACK in alternating rounds, one process per measurement.

With ``--checkpoint CKPT --eval-data DATA`` (an edgecnn checkpoint and a labelled set that
``edgecnn.data.datasets.open_dataset`` opens, e.g. ``fashion-mnist``) it instead quantises the
trained model, calibrating on the training split, and reports float and int8 top-1 on the test
split (all of it unless ``--eval-samples``).

    nice python benchmarks/studies/quantize_fidelity.py --parts methods,counts,tflite
    python benchmarks/studies/quantize_fidelity.py --parts latency --out benchmarks/results/int8_latency.json
    nice python benchmarks/studies/quantize_fidelity.py --checkpoint runs/fmnist_v2/best.ckpt --eval-data fashion-mnist

Results: printed, and saved to ``benchmarks/results/quantize_fidelity*.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parents[1] / "results"
DEFAULT_WEIGHTS = Path.home() / ".cache" / "edgecnn" / "test-assets" / "mobilenet_v2-b0353104.pth"
RECIPES = {  # name -> (activation method, cross-layer equalisation, bias correction)
    "minmax": ("minmax", False, False),
    "percentile": ("percentile", False, False),
    "histogram": ("histogram", False, False),
    "histogram+bc": ("histogram", False, True),
    "histogram+cle+bc": ("histogram", True, True),
    "percentile+bc": ("percentile", False, True),
    "percentile+cle+bc": ("percentile", True, True),
}


def simulated_logits(q, x: torch.Tensor) -> np.ndarray:
    """int8 logits of the quantised PT2E graph (PyTorch q/dq simulation, NCHW)."""
    return q.simulate(x).numpy()


def quantise(model, calib: torch.Tensor, recipe: str):
    from edgecnn.quantize.equalize import equalize_model
    from edgecnn.quantize.ptq import quantize_pt2e

    method, cle, bc = RECIPES[recipe]
    if cle or bc:
        model, _ = equalize_model(model, calib, cle=cle, bias_correction=bc)
    return quantize_pt2e(model, calib, method=method, layout="nchw", progress=False)


def photo_folds(n_views: int, folds: int, res_model, eval_views: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(calibration pool, evaluation images) per fold; folds hold out whole photos.

    Each held-out photo contributes its first ``eval_views`` views to the evaluation images.
    """
    from edgecnn.data.photos import photo_paths, sample_photos
    from edgecnn.data.transforms import Preprocess, stack

    n_photos = len(photo_paths())
    if n_photos < 2 * folds:
        raise SystemExit(f"need at least {2 * folds} photos (pip install scikit-image), found {n_photos}")
    images = sample_photos(n_photos * n_views, seed=0)
    x = stack(Preprocess.for_model(res_model, res_model.edgecnn_config.default_res), images)
    photo_of, view_of = np.arange(len(images)) % n_photos, np.arange(len(images)) // n_photos
    out = []
    for f in range(folds):
        held = photo_of % folds == f
        out.append((x[torch.as_tensor(~held)], x[torch.as_tensor(held & (view_of < eval_views))]))
    return out


def pooled(rows: list[dict]) -> dict:
    """Image-weighted means of the per-fold metrics."""
    n = np.array([r["images"] for r in rows], dtype=float)
    return {k: float(np.sum(n * np.array([r[k] for r in rows])) / n.sum())
            for k in ("top1_agreement", "cosine", "sqnr_db")} | {"images": int(n.sum())}


def run_photos(args) -> dict:
    import edgecnn
    from edgecnn.quantize.equalize import predict
    from edgecnn.quantize.report import output_metrics

    torch.manual_seed(0)
    model = edgecnn.create_model("mobilenet_v2", weights=str(args.weights)).eval()
    folds = photo_folds(args.views, args.folds, model, args.eval_views)
    refs = [predict(model, ev).numpy() for _, ev in folds]
    gen = torch.Generator().manual_seed(0)
    result: dict = {"model": "mobilenet_v2 1.0/224, torchvision ImageNet weights", "folds": args.folds,
                    "eval_images_per_fold": [int(ev.shape[0]) for _, ev in folds]}

    def evaluate(recipe: str, n_calib: int) -> dict:
        rows = []
        for (pool, ev), ref in zip(folds, refs):
            if n_calib > pool.shape[0]:
                raise SystemExit(f"only {pool.shape[0]} calibration views per fold; raise --views")
            calib = pool[torch.randperm(pool.shape[0], generator=gen)[:n_calib]]
            t0 = time.perf_counter()
            q = quantise(model, calib, recipe)
            rows.append(output_metrics(ref, simulated_logits(q, ev)) | {"seconds": time.perf_counter() - t0})
        row = pooled(rows) | {"recipe": recipe, "calib_images": n_calib}
        print(f"  {recipe:<18} calib {n_calib:>4}: agreement {100 * row['top1_agreement']:5.1f}%  "
              f"cosine {row['cosine']:.4f}  SQNR {row['sqnr_db']:5.1f} dB", flush=True)
        return row

    parts = set(args.parts.split(","))
    wanted = max([args.calib] + ([int(n) for n in args.counts.split(",")] if "counts" in parts else []))
    smallest = min(pool.shape[0] for pool, _ in folds)
    if wanted > smallest:  # fail before hours of work, not after
        raise SystemExit(f"{wanted} calibration images wanted but a fold has only {smallest} views to "
                         f"calibrate on; raise --views (to {int(np.ceil(args.views * wanted / smallest))})")
    if "methods" in parts:
        print(f"methods, {args.calib} calibration images, eval on held-out photos:")
        result["methods"] = [evaluate(r, args.calib) for r in args.recipes.split(",")]
    if "counts" in parts:
        print(f"calibration count, recipe {args.default}:")
        result["counts"] = [evaluate(args.default, int(n)) for n in args.counts.split(",")]
    if "tflite" in parts:
        from edgecnn.converters.tflite_runtime import TFLiteModel
        from edgecnn.quantize.ptq import to_tflite

        pool, ev = folds[0]
        calib = pool[torch.randperm(pool.shape[0], generator=gen)[:args.calib]]
        q = quantise(model, calib, args.default)
        t0 = time.perf_counter()
        data = to_tflite(q)
        convert_s = time.perf_counter() - t0
        tfl = TFLiteModel(data).predict(ev)
        result["tflite"] = {"recipe": args.default, "bytes": len(data), "convert_s": round(convert_s, 1),
                            "tflite_vs_float": output_metrics(refs[0], tfl),
                            "simulated_vs_float": output_metrics(refs[0], simulated_logits(q, ev)),
                            "tflite_vs_simulated": output_metrics(simulated_logits(q, ev), tfl)}
        t = result["tflite"]
        print(f"tflite ({args.default}, fold 0): agreement with float {100 * t['tflite_vs_float']['top1_agreement']:.1f}% "
              f"(PyTorch simulation {100 * t['simulated_vs_float']['top1_agreement']:.1f}%), tflite vs simulation "
              f"{100 * t['tflite_vs_simulated']['top1_agreement']:.1f}%, {len(data)} bytes, {convert_s:.0f} s to convert")
    if "latency" in parts:
        result["latency"] = int8_latency(model, args)
    return result


def run_checkpoint(args) -> dict:
    from edgecnn.weights import load_checkpoint
    from edgecnn.data.datasets import open_dataset
    from edgecnn.data.transforms import stack
    from edgecnn.quantize.equalize import predict
    from edgecnn.quantize.report import output_metrics

    model, meta = load_checkpoint(args.checkpoint)
    model.eval()
    data = open_dataset(args.eval_data)
    test = data.split("test") if "test" in data.splits else data.split("val")
    train = data.split("train")
    rng = np.random.default_rng(0)
    calib_idx = rng.choice(len(train), size=min(args.calib, len(train)), replace=False)
    calib = stack(meta.preprocess, [train.image(int(i)) for i in calib_idx])
    n_eval = len(test) if args.eval_samples is None else min(args.eval_samples, len(test))
    labels = test.labels[:n_eval]
    ev = stack(meta.preprocess, [test.image(i) for i in range(n_eval)])
    ref = predict(model, ev).numpy()
    result = {"checkpoint": str(args.checkpoint), "model": meta.model, "knobs": meta.knobs,
              "eval": f"{n_eval} images of {data.source} test split", "calib_images": int(len(calib)),
              "methods": []}
    for recipe in args.recipes.split(","):
        q = quantise(model, calib, recipe)
        m = output_metrics(ref, simulated_logits(q, ev), labels) | {"recipe": recipe}
        result["methods"].append(m)
        print(f"  {recipe:<18} top-1 float {100 * m['float_top1']:.2f}% -> int8 {100 * m['int8_top1']:.2f}% "
              f"(agreement {100 * m['top1_agreement']:.2f}%, SQNR {m['sqnr_db']:.1f} dB)", flush=True)
    return result


def int8_latency(model, args) -> dict:
    """Median LiteRT latency (ms) of edgecnn's default int8 file vs the pre-edgecnn recipes, same run."""
    import statistics
    import tempfile

    import edgecnn
    from edgecnn.benchmarks.measure import Protocol
    from edgecnn.data.calibration import calibration_images
    from edgecnn.data.transforms import Preprocess
    from edgecnn.pipelines.bench import alternating_latency
    from edgecnn.quantize.equalize import equalize_model

    pp = Preprocess.for_model(model, 224)
    calib = pp.normalize(calibration_images(pp, args.calib).pixels)
    equalized, _ = equalize_model(model, calib)
    recipes = {"edgecnn default (percentile + CLE + bias correction, litert)": (equalized, "litert", "percentile"),
               "litert-torch PT2E default (histogram)": (model, "litert", "histogram"),
               "onnx2tf (TFLite converter int8)": (model, "onnx2tf", None)}
    rows = {}
    with tempfile.TemporaryDirectory(prefix="edgecnn-int8-latency-") as tmp:
        for i, (name, (m, converter, method)) in enumerate(recipes.items()):
            r = edgecnn.export(m, quantize="int8", converter=converter, calib_method=method,
                               calib_samples=args.calib, out=Path(tmp) / str(i), progress=False, measure=False)
            rows[name] = {"path": r.files[0]["path"], "bytes": r.files[0]["bytes"]}
        timing = alternating_latency([row["path"] for row in rows.values()], rounds=args.latency_rounds,
                                     threads=args.latency_threads, protocol=Protocol(num_runs=100))
        for row in rows.values():
            row["ms"] = timing[row["path"]]["ms"]
    base = statistics.median(next(iter(rows.values()))["ms"])
    print(f"int8 MobileNetV2 1.0/224 latency, LiteRT {args.latency_threads} threads, median of "
          f"{args.latency_rounds} alternating rounds:")
    for name, row in rows.items():
        row.pop("path")  # a temporary folder
        row["median_ms"] = statistics.median(row["ms"])
        row["edgecnn_ms_over_this_ms"] = base / row["median_ms"]  # < 1: edgecnn's file is faster
        print(f"  {name:<62} {row['median_ms']:6.3f} ms  {row['bytes']:>9,} B  "
              f"edgecnn ms / this ms {row['edgecnn_ms_over_this_ms']:.3f}")
    return {"threads": args.latency_threads, "rounds": args.latency_rounds, "files": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="torchvision mobilenet_v2-b0353104.pth")
    p.add_argument("--parts", default="methods,counts,tflite",
                   help="comma list of methods, counts, tflite, latency")
    p.add_argument("--latency-threads", type=int, default=2, help="LiteRT threads for part latency")
    p.add_argument("--latency-rounds", type=int, default=5, help="alternating rounds for part latency")
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma list of {', '.join(RECIPES)}")
    p.add_argument("--default", default="percentile", choices=list(RECIPES), help="recipe for counts/tflite")
    p.add_argument("--counts", default="50,100,200,500", help="calibration counts for part counts")
    p.add_argument("--calib", type=int, default=200, help="calibration images per quantisation")
    p.add_argument("--folds", type=int, default=3, help="photo folds (whole photos held out)")
    p.add_argument("--views", type=int, default=50, help="views (photo + seeded crops) per photo")
    p.add_argument("--eval-views", type=int, default=20, help="views per held-out photo to evaluate on")
    p.add_argument("--checkpoint", type=Path, help="edgecnn checkpoint to quantise instead of MobileNetV2")
    p.add_argument("--eval-data", help="labelled data for --checkpoint, e.g. fashion-mnist")
    p.add_argument("--eval-samples", type=int, help="test images to use (default: all)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    p.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/quantize_fidelity*.json)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    result = run_checkpoint(args) if args.checkpoint else run_photos(args)
    result |= {"seconds": round(time.perf_counter() - t0, 1), "machine": platform.processor() or platform.machine(),
               "torch": torch.__version__}
    out = args.out or RESULTS / ("quantize_fidelity_" + (args.checkpoint.stem if args.checkpoint else "mobilenet_v2") + ".json")
    from edgecnn.io import write_text
    from edgecnn.console import finite

    write_text(out, json.dumps(finite(result), indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
