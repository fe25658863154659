"""``edgecnn bench``: size, latency and memory of models across runtimes and threads, here or remote."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgecnn import limits as L
from edgecnn.cli.common import ALPHA_HINT, add_target_args, add_wide_arg, bounded, target_options
from edgecnn.console import emit_json
from edgecnn.converters.registry import BACKENDS

EPILOG = """examples:
  edgecnn bench exports/mobilenet_v1_0.50_160/          every .tflite/.onnx there (+ PyTorch via report.json)
  edgecnn bench mobilenet --alpha 0.25,0.5 --res 128,160 --quantize float32,int8
  edgecnn bench model.tflite --threads 1,2,4 --runs 200 --json
  edgecnn bench model.tflite --target ssh://pi@raspberrypi.local --ssh-key ~/.ssh/id_ed25519
  edgecnn bench model.tflite --target adb --benchmark-binary ./benchmark_model --use-gpu
  edgecnn bench mobilenet --alpha 0.5,1.0 --results sweep.jsonl --plot sweep.png   (re-run resumes)

method (as TFLite's benchmark_model): init, first inference, warm-up runs (>= --warmup-runs and
--warmup-secs), then >= --runs runs lasting >= --min-secs; mean/median/p90/p99/std in ms. Peak
memory = RSS high-water-mark increase of the measuring process from just before init. Every point
runs in its own process. MACs = multiply-accumulates per image; GMAC/s at the median latency."""


def _list(kind, name: str):
    def parse(text: str) -> list:
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if not values:
            raise argparse.ArgumentTypeError(f"{name}: empty list")
        return values

    parse.bound = getattr(kind, "bound", None)
    return parse


def _choices(allowed) -> "callable":
    def check(v: str) -> str:
        v = v.strip()
        if v not in allowed:
            raise argparse.ArgumentTypeError(f"{v!r} is not one of {', '.join(allowed)}")
        return v

    return check


def add_parser(sub: argparse._SubParsersAction) -> None:
    from edgecnn.benchmarks.runtimes import RUNTIMES
    from edgecnn.converters.base import PRECISIONS

    p = sub.add_parser(
        "bench", help="latency, memory and size across runtimes and threads (local, ssh, adb)",
        description="Measure latency (ms), peak memory (bytes), file size and achieved GMAC/s of "
                    ".tflite/.onnx files, export folders or zoo models, across runtimes and thread "
                    "counts, on this machine, on a Linux board over ssh, or on Android over adb.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="MODEL_OR_PATH",
                   help="a .tflite or .onnx file, an export folder (e.g. exports/mobilenet_v1_0.50_160/) "
                        "or a zoo model name (e.g. mobilenet), which is exported first; e.g. model.tflite")
    g = p.add_argument_group("zoo models (when MODEL_OR_PATH is a name)")
    g.add_argument("--alpha", type=_list(bounded(L.ALPHA, ALPHA_HINT), "--alpha"), metavar="A[,A...]",
                   help="width multipliers to sweep; e.g. --alpha 0.25,0.5,0.75,1.0")
    g.add_argument("--res", type=_list(bounded(L.RES), "--res"), metavar="PX[,PX...]",
                   help="input resolutions to sweep (default: the model's); e.g. --res 128,160,192,224")
    g.add_argument("--quantize", type=_list(_choices(PRECISIONS), "--quantize"),
                   default=["float32", "int8"], metavar="P[,P...]",
                   help="precisions of the exported files: float32,float16,dynamic,int8 "
                        "(default float32,int8); runtimes that build the model in another precision "
                        "(PyTorch, ONNX Runtime from the name) are listed as skipped; e.g. --quantize int8")
    g.add_argument("--converter", choices=list(BACKENDS), default="litert",
                   help="back end of those exports (default litert); an export folder made by the "
                        "other one is not reused (NAME_CONVERTER/ is written instead); e.g. --converter onnx2tf")
    g.add_argument("--num-classes", type=bounded(L.NUM_CLASSES), metavar="N",
                   help="classifier outputs (default 1000); e.g. --num-classes 10")
    g.add_argument("--in-chans", type=bounded(L.IN_CHANS), metavar="C",
                   help="input channels (default the model's); e.g. --in-chans 1")
    g.add_argument("--exports-dir", type=Path, default=Path("exports"), metavar="DIR",
                   help="where zoo variants are exported, or reused when already there "
                        "(default exports/); e.g. --exports-dir /tmp/exports")
    g = p.add_argument_group("what to run and how long")
    g.add_argument("--runtime", type=_list(_choices(list(RUNTIMES)), "--runtime"), metavar="R[,R...]",
                   help=f"runtimes (default all that apply to the inputs: {', '.join(RUNTIMES)}; "
                        "GPU ones are listed as skipped without CUDA); e.g. --runtime litert,onnxruntime")
    g.add_argument("--threads", type=_list(bounded(L.THREADS), "--threads"), metavar="N[,N...]",
                   help="CPU thread counts (default 1 and all cores of the target); e.g. --threads 1,2,4")
    g.add_argument("--runs", type=bounded(L.RUNS), default=50, metavar="N",
                   help="minimum measured runs (default 50); e.g. --runs 200")
    g.add_argument("--min-secs", type=bounded(L.SECONDS), default=1.0, metavar="S",
                   help="minimum measuring time in seconds (default 1.0); e.g. --min-secs 5")
    g.add_argument("--warmup-runs", type=bounded(L.RUNS), default=1, metavar="N",
                   help="minimum warm-up runs (default 1); e.g. --warmup-runs 10")
    g.add_argument("--warmup-secs", type=bounded(L.SECONDS), default=0.5, metavar="S",
                   help="minimum warm-up time in seconds (default 0.5); e.g. --warmup-secs 2")
    g.add_argument("--max-secs", type=bounded(L.SECONDS), default=150.0, metavar="S",
                   help="stop a point's runs after this many seconds (default 150); e.g. --max-secs 30")
    g.add_argument("--timeout", type=bounded(L.SECONDS), default=600.0, metavar="S",
                   help="kill a point's process after this many seconds and record an error "
                        "(default 600); e.g. --timeout 120")
    g = p.add_argument_group("output")
    g.add_argument("--results", type=Path, metavar="FILE.jsonl",
                   help="keep every row in this JSONL file; a re-run skips the points already "
                        "measured there (resume); e.g. --results sweep.jsonl")
    g.add_argument("--csv", type=Path, metavar="FILE.csv", help="also write the table as CSV; e.g. --csv sweep.csv")
    g.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="plot latency against MACs (and accuracy when known) like the MobileNet "
                        "paper's trade-off figures; e.g. --plot sweep.png")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_wide_arg(g)
    g = p.add_argument_group("remote targets")
    add_target_args(g)
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from edgecnn.benchmarks.measure import Protocol
    from edgecnn.benchmarks.sweep import print_rows
    from edgecnn.pipelines.bench import ZooOptions, bench, target_from_url

    protocol = Protocol(num_runs=args.runs, min_secs=args.min_secs, warmup_runs=args.warmup_runs,
                        warmup_min_secs=args.warmup_secs, max_secs=args.max_secs)
    target = target_from_url(args.target, **target_options(args))
    zoo = ZooOptions(alphas=args.alpha, resolutions=args.res, precisions=tuple(args.quantize),
                     converter=args.converter, num_classes=args.num_classes, in_chans=args.in_chans,
                     exports_dir=args.exports_dir)
    result = bench(args.inputs, target, threads=args.threads, protocol=protocol, runtimes=args.runtime, zoo=zoo,
                   results=args.results, csv=args.csv, plot=args.plot, timeout=args.timeout,
                   progress=sys.stderr.isatty())
    result.target = args.target  # as typed (the label of "adb --serial S" is adb:S)
    rows, machine, failed = result.rows, result.machine, result.failed
    if args.json:
        emit_json(result.to_dict())
    elif len(failed) < len(rows):
        where = f"{machine.get('cpu')}, {machine.get('cores')} cores" if machine else args.target
        if machine and machine.get("load_1min") is not None:
            where += f", load {machine['load_1min']:.1f}"
        print_rows(rows, f"{args.target}: {where} (sorted by median latency; ms per image, batch 1)",
                   wide=args.wide)
        for model, per in result.fastest.items():
            for precision, r in per.items():
                print(f"fastest for {model} {precision}: {r['runtime']} threads={r.get('threads') or '-'}: "
                      f"{r['median_ms']:.2f} ms median")
    for r in failed:
        print(f"edgecnn: error: {r.get('model')} [{r['runtime']}, threads={r.get('threads') or '-'}]: "
              f"{r.get('error')}", file=sys.stderr)
    return 2 if failed else 0
