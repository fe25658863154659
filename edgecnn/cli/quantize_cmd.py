"""``edgecnn quantize``: full int8 with a chosen calibration recipe, and the fidelity report."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from edgecnn import limits as L
from edgecnn.cli.common import add_model_args, add_wide_arg, bounded, model_knobs
from edgecnn.console import emit_json, human_bytes
from edgecnn.converters.registry import LAYOUTS
from edgecnn.quantize.methods import DEFAULT_METHOD, DEFAULT_ROUNDING, METHODS, ROUNDINGS

EPILOG = """examples:
  edgecnn quantize mobilenet_v2 --weights imagenet --calib-data photos/ --eval-data val/
      int8 with the default recipe; eval/ has one sub-folder per class, named like the model's classes
  edgecnn quantize runs/fmnist/best.ckpt --calib-data data/train --method auto --json
  edgecnn quantize mobilenet_v2 --weights W.pth --calib-data imgs/ --method histogram --no-cle
  edgecnn quantize mobilenet_v2 --weights W.pth --calib-data imgs/ --keep-float classifier.1
  edgecnn quantize runs/fmnist/best.ckpt --calib-data data/train --keep-float auto
      also a mixed file with the (at most 2) layers that lose the most kept float, and its cost
  edgecnn quantize mobilenet_v2 --weights W.pth --calib-data imgs/ --rounding adaround
      AdaRound: each int8 weight rounded up or down to keep its layer's output (minutes of CPU)
  edgecnn quantize runs/fmnist-v1/best.ckpt --calib-data data/train --qat-epochs 2
      quantisation-aware fine-tuning on the checkpoint's own training data (or --train-data DATA)

writes the export folder (int8 .tflite verified against PyTorch, labels, report.json) plus
fidelity.json and fidelity_layers.png (per-layer SQNR, worst first). The int8 file outputs logits
(what the SQNR figures measure); `edgecnn export` gives apps softmax probabilities (--scores).
trained models get cross-layer equalisation + bias correction by default (--no-cle, --no-bias-correction).
--qat-epochs N fine-tunes with fake-quantised int8 (PT2E QAT) and converts the learned ranges; it also
writes qat.ckpt, which `edgecnn export qat.ckpt --converter onnx2tf` takes too.
methods: minmax (>= 8 images), percentile (>= 32, default), histogram (L2-optimal ranges, >= 16),
auto (tries the three on 75% of the calibration images, judges on the other 25%; >= 48).
rounding: nearest (default) or adaround (Nagel et al. 2020: per layer, 300 Adam steps on input rows
sampled from 3/4 of the calibration images; kept per layer only where its output error on the other
1/4 beats nearest; bias correction then defaults off; per-layer MSEs in --json and fidelity.json).
exit status: 0 ok, 1 the int8 file failed verification, 2 bad input."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize", help="int8 post-training quantisation with a fidelity report (agreement, SQNR, per layer)",
        description="Quantise a zoo model or an edgecnn checkpoint (MODEL) to a full-integer int8 .tflite "
                    "through the export pipeline, calibrated on your images, and report how close it "
                    "stays to float: top-1 agreement, logit cosine and SQNR on images that did not "
                    "calibrate it, accuracy when labels are given, and each layer's SQNR.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--calib-data", required=True, metavar="DIR",
                   help="folder of calibration images (or class sub-folders), preprocessed like the "
                        "model's input; e.g. --calib-data data/train")
    p.add_argument("--calib-samples", type=bounded(L.HELD_IMAGES), default=200, metavar="N",
                   help="calibration images to use (default 200); e.g. --calib-samples 100")
    p.add_argument("--eval-data", metavar="DIR",
                   help="evaluation images: class sub-folders named like the model's classes (gives "
                        "top-1/top-5 and the paired top-1 change with its interval), ImageNet photos "
                        "named <wnid>_*.JPEG (labelled for 1000-class models), or plain images; default: "
                        "images of --calib-data held back from calibration; e.g. --eval-data data/val")
    p.add_argument("--eval-samples", type=bounded(L.HELD_IMAGES), default=100, metavar="N",
                   help="evaluation images to use (default 100); e.g. --eval-samples 500")
    p.add_argument("--method", default=DEFAULT_METHOD,
                   help=f"activation ranges: {', '.join(METHODS)} or auto (default {DEFAULT_METHOD}: "
                        "closest to float on held-out photos, see benchmarks/studies/quantize_fidelity.py); "
                        "e.g. --method auto")
    p.add_argument("--rounding", default=DEFAULT_ROUNDING,
                   help=f"int8 weight rounding: {', '.join(ROUNDINGS)} (default {DEFAULT_ROUNDING}); adaround "
                        "learns up/down per weight from the calibration images (Nagel et al. 2020), costs "
                        "minutes of CPU and turns the default bias correction off; e.g. --rounding adaround")
    p.add_argument("--cle", action=argparse.BooleanOptionalAction, default=None,
                   help="cross-layer equalisation first (Nagel et al. 2019; ReLU6 between equalised "
                        "convs becomes ReLU); default on for trained models (weights or checkpoints), off for "
                        "random weights and with --qat-epochs; --no-cle turns it off")
    p.add_argument("--bias-correction", action=argparse.BooleanOptionalAction, default=None,
                   help="correct each bias for the expected int8 weight-rounding error; default on for "
                        "trained models, off for random weights, with --qat-epochs and with --rounding adaround")
    p.add_argument("--keep-float", action="append", default=[], metavar="LAYER",
                   help="also write NAME_int8_mixed.tflite with this layer in float (repeatable; names "
                        "as in the per-layer table), verified and reported like the int8 file, with its "
                        "size and latency beside the int8 file's; 'auto': the layers the per-layer table "
                        "proposes (at most 2 that lose >= 3 dB themselves, measured on calibration "
                        "images); e.g. --keep-float classifier.1, --keep-float auto")
    q = p.add_argument_group("quantisation-aware training (when post-training int8 loses too much)")
    q.add_argument("--qat-epochs", type=bounded(L.EPOCHS), default=None, metavar="N",
                   help="fine-tune N epochs with fake-quantised int8 weights and activations, then convert "
                        "with the learned ranges (default: off, post-training only); e.g. --qat-epochs 2")
    q.add_argument("--train-data", metavar="DATA",
                   help="labelled data for --qat-epochs: fashion-mnist, cifar-10 or a folder with one "
                        "sub-folder per class (default: the checkpoint's training data); e.g. --train-data ./photos")
    q.add_argument("--qat-lr", type=bounded(L.LR), default=None, metavar="LR",
                   help="peak AdamW learning rate of the fine-tuning, cosine to 0 (default 1e-4); e.g. --qat-lr 3e-5")
    q.add_argument("--qat-batch-size", type=bounded(L.BATCH_SIZE), default=None, metavar="B",
                   help="images per QAT step (default 64); e.g. --qat-batch-size 128")
    p.add_argument("--io", choices=("float32", "int8"), default="float32",
                   help="interface of the int8 file: float32 (quantise inside, default) or int8")
    p.add_argument("--layout", choices=LAYOUTS, default="nhwc",
                   help="input layout: nhwc (camera frames, default) or nchw (PyTorch's)")
    p.add_argument("--layer-images", type=bounded(L.LAYER_IMAGES), default=8, metavar="N",
                   help="evaluation images for the per-layer SQNR table (default 8, 0 skips it)")
    p.add_argument("--out", metavar="DIR", help="output folder (default exports/<name>_<method>)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout instead of the tables")
    add_wide_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgecnn.pipelines.quantize import QuantizeOptions, quantize

    options = QuantizeOptions(
        calib_data=args.calib_data, eval_data=args.eval_data, method=args.method, rounding=args.rounding, cle=args.cle,
        bias_correction=args.bias_correction, keep_float=args.keep_float, calib_samples=args.calib_samples,
        eval_samples=args.eval_samples, layer_images=args.layer_images, io=args.io, layout=args.layout,
        out=args.out, qat_epochs=args.qat_epochs or 0, train_data=args.train_data, qat_lr=args.qat_lr,
        qat_batch_size=args.qat_batch_size, progress=not args.json)
    result = quantize(args.model, options=options, knobs=model_knobs(args), res=args.res,
                      num_classes=args.num_classes, in_chans=args.in_chans, weights=args.weights)
    if args.json:
        emit_json(result.to_dict())
        return 0
    if result.auto_scores:
        print("method auto: " + ", ".join(f"{s['method']} {100 * s['top1_agreement']:.1f}% / {s['sqnr_db']:.1f} dB"
                                          for s in result.auto_scores) + f" -> {result.method}")
    if result.equalize:
        e = result.equalize
        kept = f" ({e['relu6_kept']} kept: their clamp at 6 is active)" if e.get("relu6_kept") else ""
        print(f"equalisation: {e['pairs']} conv pairs, {e['relu6_replaced']} ReLU6 -> ReLU{kept}, weight range "
              f"balance {e['balance_before']:.2f} -> {e['balance_after']:.2f}, "
              f"{e['bias_corrected_layers']} biases corrected")
    if result.adaround:
        a = result.adaround
        gains = sorted(r["mse_nearest"] / max(r["mse_adaround"], 1e-30) for r in a["layers"] if r["kept"] == "adaround")
        median = f", output MSE / {gains[len(gains) // 2]:.2f} (median layer)" if gains else ""
        print(f"AdaRound: {a['rounded']} of {len(a['layers'])} layers re-rounded{median}, "
              f"{len(a['skipped'])} skipped, {a['seconds']:.0f} s")
    if result.qat:
        t = result.qat
        print(f"QAT: {t['epochs']} epoch(s) on {t['data']} ({t['train_images']} images); {t['val']}: float "
              f"{100 * t['float_val_top1']:.2f}% -> fake-quantised int8 {100 * t['qat_val_top1']:.2f}%")
    print_report(result.fidelity, wide=args.wide)
    floats = result.fidelity.extra["float_ops"]
    if floats["in_file"]:
        ops = ", ".join(f"{op} x{n}" for op, n in floats["by_op"].items())
        layers = "; ".join(f"{op} in {names[0]}" + (f" (+{len(names) - 1} more)" if len(names) > 1 else "")
                           for op, names in floats["unannotated_layers"].items())
        print(f"warning: {floats['in_file']} ops of the int8 file run in float ({ops}); the quantiser left "
              f"these layers unannotated: {layers or 'none'}. If accuracy or speed suffers there, pick another "
              f"activation for them, or keep them float on purpose with --keep-float LAYER.", file=sys.stderr)
    f = result.export.files[0]
    print(f"int8 file: {f['path']} ({human_bytes(f['bytes'])}, {f['latency_ms']} ms median CPU latency, "
          f"verification {'passed' if (f['verification'] or {}).get('passed') else 'see report'})")
    auto = result.fidelity.extra.get("keep_float_auto")
    if auto is not None and not auto["proposal"]:
        print(f"--keep-float auto: no layer lost >= 3 dB by itself on {auto['chosen_on']}; no mixed file")
    if result.mixed:
        m = result.mixed
        print(f"mixed precision ({', '.join(m['keep_float'])} in float): {m['file']}: "
              f"{human_bytes(m['bytes'])} vs {human_bytes(m['int8_bytes'])}, {m['latency_ms']:.2f} ms vs "
              f"{m['int8_latency_ms']:.2f} ms, agreement {100 * m['outputs']['top1_agreement']:.1f}%, "
              f"verification {(m['verification'] or {}).get('status', 'skipped')}")
    print(f"stages: {', '.join(f'{k} {v:.1f} s' for k, v in result.stages.items())}")
    print(f"report: {', '.join(result.files.values())}")
    return 0


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.1f}"


def print_report(report: Any, top: int = 12, wide: bool = False) -> None:
    """Rich tables for people: the output metrics, then the ``top`` worst layers (``wide``: every column)."""
    from edgecnn.console import print_table

    o = report.outputs
    rows = [("top-1 agreement int8 vs float", f"{100 * o['top1_agreement']:.1f}% of {o['images']} images"),
            ("logit cosine (mean / min)", f"{o['cosine']:.4f} / {o['cosine_min']:.4f}"),
            ("logit SQNR", f"{_fmt(o['sqnr_db'])} dB")]
    if "float_top1" in o:
        rows += [("top-1 float -> int8", f"{100 * o['float_top1']:.1f}% -> {100 * o['int8_top1']:.1f}%"),
                 ("top-5 float -> int8", f"{100 * o['float_top5']:.1f}% -> {100 * o['int8_top5']:.1f}%")]
        c = o["top1_change"]
        rows += [("top-1 change (paired)", f"{c['diff']:+.1f} points, {100 * c['confidence']:.0f}% CI "
                                           f"[{c['low']:+.1f}, {c['high']:+.1f}]; {c['a_only']} lost, "
                                           f"{c['b_only']} gained")]
    rows += [("logit KL float || int8", f"{o['kl_divergence']:.4f} nats")]
    print_table(f"int8 fidelity: {report.model}, method {report.method}, {report.calib_images} calibration "
                "images", ("measure", "value"), rows, wide=wide)
    if report.layers:
        worst = sorted(report.layers, key=lambda l: -l.loss_db)[:top]
        print_table(f"layers that lost the most (of {len(report.layers)}; SQNR over {report.layer_images} images)",
                    ("layer", "op", "SQNR dB", "lost here dB"),
                    [(l.name, l.op, _fmt(l.sqnr_db), f"{l.loss_db:.1f}") for l in worst],
                    justify=("left", "left", "right", "right"), optional=["op"], wide=wide)
    proposal = report.extra.get("keep_float_proposal")
    if proposal:
        flags = " ".join(f"--keep-float {p['layer']}" for p in proposal)
        lost = " and ".join(f"{p['lost_db']:.1f} dB" for p in proposal)
        print(f"proposal: {flags} (lost {lost} at the layer itself); the same command with it adds a mixed "
              f"file with its accuracy and latency next to the int8 one's")
