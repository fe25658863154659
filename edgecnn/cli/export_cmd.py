"""``edgecnn export``: a model name or checkpoint in, a folder of verified ``.tflite`` files out."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgecnn import limits as L
from edgecnn.cli.common import add_model_args, add_wide_arg, bounded, model_knobs
from edgecnn.console import emit_json, human_bytes, human_count, print_table
from edgecnn.converters.registry import BACKENDS, LAYOUTS
from edgecnn.quantize.methods import DEFAULT_METHOD, METHODS, MIN_CALIB_IMAGES

EPILOG = """examples:
  edgecnn export mobilenet --alpha 0.5 --res 160
      float32 + int8 files in exports/mobilenet_v1_0.50_160/, verified, with a summary table
  edgecnn export mobilenet_v2 --weights imagenet --quantize float32,float16,dynamic,int8 --io float32,uint8
  edgecnn export runs/fmnist/best.ckpt --calib-data data/val --io uint8 --out app/model
  edgecnn export squeezenet1_1 --converter onnx2tf --layout nchw --c-array --json
  edgecnn export mobilenet_v2 --weights imagenet --scores logits      raw logits instead of probabilities

files are named for what they are: NAME_float32, NAME_float16, NAME_dynamic_int8 (int8 weights,
float activations), NAME_int8 (full integer, float I/O), NAME_int8_uint8io, NAME_int8_int8io.
the files output class probabilities (softmax inside the graph) unless --scores logits; after the
table come the full paths written and the commands to try next (bench, eval, loading it in an app).
exit status: 0 ok, 1 a file failed verification (the folder is still written), 2 bad input."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="convert a model to verified, app-ready .tflite files (float32, int8, ...)",
        description="Convert a zoo model (or an edgecnn checkpoint given as MODEL) to .tflite files, "
                    "embed labels and normalisation as TFLite metadata, check every file against "
                    "PyTorch on real images, measure CPU latency and write report.json. Works offline.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--quantize", default="float32,int8", metavar="LIST",
                   help="comma list of float32, float16, dynamic (int8 weights, float activations), "
                        "int8 (full integer); default float32,int8; e.g. --quantize float32,float16")
    p.add_argument("--io", default="float32", metavar="LIST",
                   help="interface of the int8 file, comma list of float32 (quantise inside), uint8 "
                        "(camera bytes in, usual for apps), int8; default float32; e.g. --io uint8")
    p.add_argument("--converter", choices=tuple(BACKENDS), default="litert",
                   help="back end: " + ", ".join(f"{b.name} ({b.summary})" for b in BACKENDS.values())
                        + "; e.g. --converter onnx2tf")
    p.add_argument("--layout", choices=LAYOUTS, default="nhwc",
                   help="input layout of the files: nhwc (HWC camera frames, default) or nchw "
                        "(PyTorch's); e.g. --layout nchw")
    p.add_argument("--input", choices=("pixels", "normalized"), default="pixels",
                   help="what the files take: pixels (RGB values 0-255, normalisation inside the "
                        "graph: what apps and MediaPipe feed; default) or normalized (PyTorch's "
                        "(pixel/255 - mean)/std tensor); e.g. --input normalized")
    p.add_argument("--scores", choices=("softmax", "logits"), default="softmax",
                   help="what the files output: softmax (class probabilities in [0, 1] summing to 1, "
                        "the softmax inside the graph, so an app's score threshold is a probability; "
                        "default, as Keras Applications) or logits (the raw classifier outputs); "
                        "recorded in the files' metadata and report.json; e.g. --scores logits")
    p.add_argument("--calib-data", metavar="DIR",
                   help="folder of calibration images (or class sub-folders) for int8; default: the "
                        "checkpoint's training data, else real photos from installed packages; "
                        "e.g. --calib-data data/train")
    p.add_argument("--calib-samples", type=bounded(L.HELD_IMAGES), default=32, metavar="N",
                   help="number of calibration images (default 32); e.g. --calib-samples 200")
    choosing = [b.name for b in BACKENDS.values() if b.calib_methods]
    own = "; ".join(f"{b.name} uses {b.calibration}" for b in BACKENDS.values() if not b.calib_methods)
    p.add_argument("--calib-method", choices=sorted({m for b in BACKENDS.values() for m in b.calib_methods},
                                                    key=list(METHODS).index), default=None,
                   help=f"activation ranges for int8 on the {' and '.join(choosing)} back end (default "
                        f"{DEFAULT_METHOD}): "
                        + "; ".join(f"{k} (>= {MIN_CALIB_IMAGES[k]} images): {v.replace('%', '%%')}" for k, v in METHODS.items())
                        + f" ({own}); e.g. --calib-method minmax")
    p.add_argument("--out", metavar="DIR",
                   help="output folder, replaced atomically; an existing file or symbolic link there is "
                        "refused (default exports/<name>, e.g. exports/mobilenet_v1_0.50_160); "
                        "e.g. --out app/src/main/assets/model")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the comparison with PyTorch (not recommended)")
    p.add_argument("--no-latency", dest="measure", action="store_false",
                   help="skip the quick CPU latency measurement")
    p.add_argument("--c-array", action="store_true",
                   help="also write model_data.h/.cc (the last file as an aligned byte array, for "
                        "firmware and TFLite Micro)")
    p.add_argument("--verbose", action="store_true", help="show the converters' own logs (on stderr)")
    p.add_argument("--json", action="store_true",
                   help="print the report as one JSON object on stdout instead of the table")
    add_wide_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgecnn.errors import VerificationError
    from edgecnn.pipelines.export import ExportOptions, ModelRequest, export

    request = ModelRequest(args.model, knobs=model_knobs(args), res=args.res, num_classes=args.num_classes,
                           in_chans=args.in_chans, weights=args.weights)
    options = ExportOptions(
        precisions=args.quantize, ios=args.io, layout=args.layout, converter=args.converter,
        calib_data=args.calib_data, calib_samples=args.calib_samples, calib_method=args.calib_method,
        pixel_input=args.input == "pixels", scores=args.scores, verify=args.verify, measure=args.measure,
        c_array=args.c_array, verbose=args.verbose, progress=not args.json, out=args.out)
    try:
        report = export(request, options=options)
    except VerificationError as exc:
        if args.json and getattr(exc, "report", None) is not None:
            emit_json({**exc.report.to_dict(), "written": written_paths(exc.report)})
        raise
    if args.json:
        emit_json({**report.to_dict(), "written": written_paths(report)})
        return 0
    print_summary(report, wide=args.wide)
    return 0


def _check(v: dict | None, precision: str) -> str:
    if v is None:
        return "not verified"
    mark = "FAILED" if v["status"] == "failed" else v["status"]
    if precision == "float32":
        return f"{mark}, rel err {v['max_rel_error']:.1e}"
    return f"{mark}, top-1 {v['top1_agreement']:.0%}, cos {v['cosine']:.3f}"


def print_summary(report, wide: bool = False) -> None:
    """The summary table for people (stdout)."""
    knobs = ", ".join(f"{k}={v}" for k, v in report.knobs.items())
    title = (f"{report.name}: {report.model} ({knobs or 'no knobs'}) at {report.res}px, "
             f"{human_count(report.params)} params, {human_count(report.macs)} MACs; weights: {report.weights}; "
             f"{report.converter} back end, {report.layout.upper()} input")
    rows = [[f["suffix"], f["io"] if f["precision"] == "int8" else "float32", human_bytes(f["bytes"]),
             _check(f["verification"], f["precision"]),
             "" if f["latency_ms"] is None else f"{f['latency_ms']:.2f}",
             f"{f['transpose']}/{f['dequantize']}/{f['float_ops']}"] for f in report.files]
    print_table(title, ["file", "I/O", "size", "vs PyTorch", "ms", "T/DQ/F"], rows,
                justify=["left", "left", "right", "left", "right", "right"], optional=["T/DQ/F", "I/O"], wide=wide)
    print(f"input {report.input}; output {SCORES_TEXT[report.scores]}; ms: median CPU latency, 2 threads; "
          f"T/DQ/F: TRANSPOSE, DEQUANTIZE and float ops left in the graph")
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in report.stages.items())
    print(f"stages: {stages}")
    if report.calibration:
        print(f"int8 calibration: {report.calibration['source']}")
    for w in report.warnings:
        print(f"WARNING: {w}")
    print_next_steps(report)


SCORES_TEXT = {"softmax": "class probabilities (softmax, sum 1)", "logits": "raw logits (--scores logits)"}
# the file an app should load first: camera bytes in, then float I/O int8, then float (MediaPipe refuses int8 input)
APP_FILE_ORDER = ("int8_uint8io", "int8", "float16", "float32", "dynamic_int8")


def written_paths(report) -> list[str]:
    """Absolute paths of everything the export wrote: the .tflite files, side files, report.json."""
    folder = Path(report.out_dir).resolve()
    names = [f["name"] for f in report.files] + list(report.extra_files) + ["report.json"]
    return [str(folder / n) for n in names]


def print_next_steps(report) -> None:
    """The files written (full paths) and what to run next: bench, eval, loading it in an app."""
    print(f"wrote {Path(report.out_dir).resolve()}/:")
    for path in written_paths(report):
        print(f"  {path}")
    by_suffix = {f["suffix"]: str(Path(f["path"]).resolve()) for f in report.files}
    app = next((by_suffix[s] for s in APP_FILE_ORDER if s in by_suffix), None)
    print("next:")
    print(f"  edgecnn bench {Path(report.out_dir).resolve()}      latency and memory of every file")
    if app is not None:
        print(f"  edgecnn eval {app} --data DIR      accuracy on labelled images (one sub-folder per class)")
        print("  in an app (MediaPipe Tasks, Python; Android/iOS take the same file):")
        print("    import mediapipe as mp")
        print(f"    with mp.tasks.vision.ImageClassifier.create_from_model_path({app!r}) as classifier:")
        print("        print(classifier.classify(mp.Image.create_from_file('photo.jpg')).classifications[0].categories[:3])")
