"""EfficientNet-Lite0 and MobileNetV2 int8 on labelled ImageNet photos, before and after the ReLU6 fix.

Issue 15: EfficientNet-Lite0 lost ~3 points top-1 through edgecnn's default int8 path. Root cause:
litert-torch's PT2E annotator fuses ``conv -> relu`` but not ``conv -> relu6`` (``hardtanh(0, 6)``),
so every conv feeding a ReLU6 got its own output observer on the *pre-activation* range, and the
ReLU6 output shared that grid (``propagate_annotation``): tens of units on 255 steps for values the
clamp then cuts to [0, 6]. :func:`edgecnn.quantize.ptq.annotate_conv_relu6` fuses them.

Recipes (all: percentile activation ranges, per-channel int8 weights):

- ``before``: the default before the fix: unfused conv/ReLU6 (litert-torch's annotation), CLE
  (ReLU6 replaced by ReLU across equalised pairs) + bias correction.
- ``before_plain``: unfused, no CLE, no bias correction.
- ``after``: today's default recipe (``edgecnn quantize`` on a trained model).
- ``after_plain``: fused, no CLE, no bias correction.

Per model (224 px, the given weights): float and int8 top-1 on the evaluation photos, the paired
int8 - float difference with its 95% bootstrap interval and McNemar p (:mod:`edgecnn.paired`),
logit SQNR/KL, and the paired difference of each recipe against ``before``. int8 logits come from
the converted ``.tflite`` (ai-edge-litert) unless ``--simulate`` (PT2E q/dq graph in PyTorch).

    python benchmarks/studies/lite0_int8.py --calib /tmp/inet/calib --eval /tmp/inet/eval

Writes ``benchmarks/results/lite0_int8.json`` and ``.md`` (``--out`` changes the stem).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from imagenet_photos import WEIGHTS, add_photo_args  # benchmarks/studies/, beside this script

RESULTS = Path(__file__).resolve().parents[1] / "results"
RECIPES = {"before": (False, True), "before_plain": (False, False), "after": (True, True), "after_plain": (True, False)}


def photos(folder: Path, preprocess, n: int) -> tuple[torch.Tensor, np.ndarray]:
    """The first ``n`` photos of ``folder`` in sorted order, normalised, with their synset labels."""
    from edgecnn.data.transforms import list_images, load_image
    from edgecnn.labels import synset_index

    files = sorted(list_images(folder))[:n]
    pixels = np.stack([preprocess.to_uint8(load_image(p)) for p in files])
    return preprocess.normalize(pixels), np.asarray([synset_index(p.name) for p in files])


def int8_logits(model, calib: torch.Tensor, x: torch.Tensor, fused: bool, equalise: bool, simulate: bool):
    """int8 logits of one recipe on ``x``, and what it cost (seconds, equalisation report)."""
    import edgecnn.quantize.ptq as ptq
    from edgecnn.converters.tflite_runtime import TFLiteModel
    from edgecnn.quantize.equalize import equalize_model

    start, eq = time.time(), None
    if equalise:
        model, report = equalize_model(model, calib, cle=True, bias_correction=True)
        eq = report.to_dict()
    fuse = ptq.annotate_conv_relu6
    try:
        if not fused:  # litert-torch's own annotation: conv outputs observed before the ReLU6
            ptq.annotate_conv_relu6 = lambda *args: None
        q = ptq.quantize_pt2e(model, calib, layout="nhwc", progress=False)
        seconds = time.time() - start
        out = q.simulate(x).numpy() if simulate else TFLiteModel(ptq.to_tflite(q)).predict(x)
    finally:
        ptq.annotate_conv_relu6 = fuse
    return out, round(seconds, 1), eq


def study(name: str, args) -> dict:
    from edgecnn.data.transforms import Preprocess
    from edgecnn.pipelines.export import ModelRequest, build_model
    from edgecnn.paired import paired_difference
    from edgecnn.quantize.equalize import predict
    from edgecnn.quantize.report import output_metrics

    model = build_model(ModelRequest(name, weights=str(args.weights[name]))).model
    pre = Preprocess.for_model(model, 224)
    calib, _ = photos(args.calib, pre, args.calib_samples)
    x, y = photos(args.eval, pre, args.eval_samples)
    ref = predict(model, x).numpy()
    row: dict = {"model": name, "calib_images": len(calib), "eval_images": len(x),
                 "float_top1": round(100 * float(np.mean(ref.argmax(1) == y)), 2), "recipes": {}}
    correct = {}
    for recipe in args.recipes:
        fused, equalise = RECIPES[recipe]
        out, seconds, eq = int8_logits(model, calib, x, fused, equalise, args.simulate)
        m = output_metrics(ref, out, y)
        correct[recipe] = out.argmax(1) == y
        entry = {"fused_relu6": fused, "cle_bias_correction": equalise, "quantise_s": seconds, "equalize": eq,
                 "int8_top1": round(100 * m["int8_top1"], 2), "int8_minus_float": m["top1_change"],
                 "top1_agreement": m["top1_agreement"], "logit_sqnr_db": round(m["sqnr_db"], 2),
                 "kl": round(m["kl_divergence"], 4)}
        if "before" in correct and recipe != "before":
            entry["vs_before"] = paired_difference(correct["before"], correct[recipe]).to_dict()
        row["recipes"][recipe] = entry
        print(name, recipe, json.dumps(entry), flush=True)
    return row


def markdown(doc: dict) -> str:
    lines = [f"# int8 on labelled ImageNet photos ({doc['int8_from']})", "",
             f"Calibration: {doc['calib']}; evaluation: {doc['eval']} (paired, 95% bootstrap interval).", "",
             "| model | recipe | float top-1 | int8 top-1 | int8 - float [95% CI] | lost / gained | vs before "
             "| logit SQNR dB |", "|---|---|---|---|---|---|---|---|"]
    for row in doc["models"]:
        for recipe, e in row["recipes"].items():
            d, v = e["int8_minus_float"], e.get("vs_before")
            vs = f"{v['diff']:+.1f} [{v['low']:+.1f}, {v['high']:+.1f}]" if v else ""
            lines.append(f"| {row['model']} | {recipe} | {row['float_top1']:.1f} | {e['int8_top1']:.1f} | "
                         f"{d['diff']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}] | {d['a_only']} / {d['b_only']} | "
                         f"{vs} | {e['logit_sqnr_db']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_photo_args(p)
    p.add_argument("--recipes", default="before,after", help=f"comma list of {', '.join(RECIPES)}")
    p.add_argument("--simulate", action="store_true", help="int8 logits from the PT2E graph, not the .tflite")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "lite0_int8")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.recipes = args.recipes.split(",")
    args.weights = WEIGHTS
    doc = {"calib": f"{args.calib_samples} photos of {args.calib}", "eval": f"{args.eval_samples} photos of {args.eval}",
           "int8_from": "PT2E simulation" if args.simulate else ".tflite (ai-edge-litert)",
           "models": [study(name, args) for name in args.models.split(",")]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
