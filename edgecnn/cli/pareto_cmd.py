"""``edgecnn pareto``: which width x resolution to ship: accuracy of the real files vs latency on the target."""

from __future__ import annotations

import argparse
import os
import sys

from edgecnn import limits as L
from edgecnn.cli.bench_cmd import _list
from edgecnn.cli.common import ALPHA_HINT, add_target_args, add_wide_arg, bounded, target_options
from edgecnn.console import emit_json, human_bytes, human_count, print_table
from edgecnn.signals import exit_status, signal_name

EPILOG = """examples:
  edgecnn pareto mobilenet --alpha 0.25,0.5,0.75,1.0 --res 32,48,64 --data fashion-mnist --latency-budget 0.5
  edgecnn pareto mobilenet_v2 --alpha 0.35,0.5,1.0 --res 96,128 --data ./photos --pretrained imagenet --epochs 3
  edgecnn pareto mobilenet --alpha 0.25,0.5,1.0 --res 48 --data fashion-mnist --budget-min 5
  edgecnn pareto efficientnet --phi 0,0.5,1 --data fashion-mnist --target ssh://pi@raspberrypi.local
  edgecnn pareto mobilenet_v2,squeezenet1_1,shufflenet_v2_x1_0 --res 64 --data fashion-mnist --json
  edgecnn pareto mobilenet --alpha 0.25,0.5 --res 32,48 --data fashion-mnist --executor ray --ray-address auto

for each variant: train it on DATA (same recipe and epochs, or minutes with --budget-min, for all)
-> export float32 and int8 .tflite files, verified against PyTorch -> top-1/top-5 of those files on
DATA's test split -> latency (median ms, batch 1), peak memory and size on the target, one process
per point. Rows go to OUT/rows.jsonl as each variant finishes; the same command again resumes
(finished variants are skipped, failed ones retried); Ctrl-C keeps what finished. OUT also gets
results.json, results.csv and pareto.png (accuracy vs latency, log axis, float32 and int8 points,
the int8 frontier, the budget line). Rows carry the int8 - float32 top-1 change with its 95%
interval (paired, same test images).
Exit status: 0, or 2 when a variant failed (its row says why), 130/143 when interrupted.

Ray: start a cluster with 'ray start --head' on one machine and 'ray start --address=HEAD:6379' on the
others (edgecnn[ray] installed on each, OUT on a folder every node sees), then pass --executor ray
--ray-address auto (on the head) or ray://HEAD:10001 (from elsewhere)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pareto", help="accuracy vs latency of a grid of variants, trained, exported and measured",
        description="Train every variant of a grid (alpha x res, phi, or a list of zoo models) on your "
                    "data, export verified float32 and int8 .tflite files, score those files on the "
                    "test split and measure them on the target; print the accuracy-latency trade-off, "
                    "its Pareto frontier and the most accurate variant within a latency budget.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("family", metavar="FAMILY",
                   help="a zoo model to scale (e.g. mobilenet, mobilenet_v2, efficientnet) or a comma list "
                        "of zoo names to compare; e.g. mobilenet_v2,squeezenet1_1")
    g = p.add_argument_group("the grid")
    g.add_argument("--alpha", type=_list(bounded(L.ALPHA, ALPHA_HINT), "--alpha"), metavar="A[,A...]",
                   help="width multipliers; e.g. --alpha 0.25,0.5,0.75,1.0")
    g.add_argument("--res", type=_list(bounded(L.RES), "--res"), metavar="PX[,PX...]",
                   help="input resolutions (default: what training picks for the data); e.g. --res 32,48,64")
    g.add_argument("--phi", type=_list(bounded(L.PHI), "--phi"), metavar="PHI[,PHI...]",
                   help="EfficientNet compound coefficients; e.g. --phi 0,0.5,1")
    g = p.add_argument_group("training (the same for every variant)")
    g.add_argument("--data", required=True, metavar="DATA",
                   help="fashion-mnist, cifar-10 or a folder of class sub-folders; accuracy is measured on "
                        "its test split (else its held-out val split); e.g. --data fashion-mnist")
    budget = g.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=bounded(L.EPOCHS), default=1, metavar="N",
                        help="epochs per variant (default 1); e.g. --epochs 3")
    budget.add_argument("--budget-min", type=bounded(L.BUDGET_MIN), metavar="M",
                        help="minutes of training per variant instead of --epochs: each variant trains the whole "
                             "epochs (at least 1) that a timed probe of its optimizer steps fits in M minutes here "
                             "(data loading not counted); e.g. --budget-min 5")
    g.add_argument("--pretrained", choices=("imagenet",), default=None,
                   help="fine-tune from ImageNet weights where the zoo has them; e.g. --pretrained imagenet")
    g.add_argument("--batch-size", type=bounded(L.BATCH_SIZE), default=None, metavar="B",
                   help="images per training batch (default: the family recipe's, see 'edgecnn train --help'); "
                        "e.g. --batch-size 64")
    g.add_argument("--seed", type=bounded(L.SEED), default=0, metavar="S", help="random seed (default 0); e.g. --seed 1")
    g.add_argument("--workers", type=bounded(L.WORKERS), default=None, metavar="N",
                   help="DataLoader workers per variant (default: CPU cores - 1, at most 8); e.g. --workers 0")
    g.add_argument("--device", default="auto", metavar="D",
                   help="training device: auto, cpu, cuda, mps (default auto); e.g. --device cuda")
    g.add_argument("--quantize", type=_list(str.strip, "--quantize"), default=["int8", "float32"], metavar="P[,P...]",
                   help="files to export and compare: int8 and/or float32 (default both); e.g. --quantize int8")
    g = p.add_argument_group("measuring")
    g.add_argument("--threads", type=_list(bounded(L.THREADS), "--threads"), metavar="N[,N...]",
                   help="CPU thread counts (default 1 and this machine's cores; 1 for remote targets); "
                        "e.g. --threads 1,4")
    g.add_argument("--runs", type=bounded(L.RUNS), default=20, metavar="N",
                   help="minimum measured runs per point (default 20); e.g. --runs 100")
    g.add_argument("--min-secs", type=bounded(L.SECONDS), default=0.5, metavar="S",
                   help="minimum measuring time per point in seconds (default 0.5); e.g. --min-secs 2")
    g.add_argument("--timeout", type=bounded(L.SECONDS), default=600.0, metavar="S",
                   help="kill a point's process after this many seconds (default 600); e.g. --timeout 120")
    add_target_args(g)
    g = p.add_argument_group("choosing")
    g.add_argument("--latency-budget", type=bounded(L.LATENCY_MS), metavar="MS",
                   help="name the most accurate variant whose file runs within MS milliseconds on the target; "
                        "e.g. --latency-budget 2.5")
    g.add_argument("--budget-precision", choices=("int8", "float32"), default="int8",
                   help="the file the budget is for (default int8); e.g. --budget-precision float32")
    g.add_argument("--budget-threads", type=bounded(L.THREADS), metavar="N",
                   help="the thread count the budget is for (default: the fewest measured); e.g. --budget-threads 4")
    g = p.add_argument_group("running")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: variants one after another here (default); ray: each variant a Ray task, "
                        "measurements serialised per target; e.g. --executor ray")
    g.add_argument("--ray-address", metavar="ADDR",
                   help="the Ray cluster: auto (the one started with 'ray start' here) or ray://HOST:10001 "
                        "(default: a new local instance); e.g. --ray-address auto")
    g.add_argument("--cpus-per-variant", type=bounded(L.THREADS), metavar="N",
                   help="CPUs one variant trains with (torch threads; Ray's num_cpus per task; default: "
                        "all cores for local, 1 for ray; equal values give equal numbers); e.g. --cpus-per-variant 4")
    g.add_argument("--out", metavar="DIR", help="output folder (default runs/pareto/FAMILY); e.g. --out runs/pareto/v1")
    g.add_argument("--json", action="store_true", help="print one JSON object (the results.json report) on stdout")
    add_wide_arg(g)
    p.set_defaults(func=run_pareto_cmd)


def _config(args: argparse.Namespace):  # noqa: ANN202 (ParetoConfig)
    from edgecnn.pipelines.pareto import ParetoConfig

    local = args.target == "local"
    cpus = args.cpus_per_variant or (os.cpu_count() or 1 if args.executor == "local" else 1)
    options = target_options(args)
    return ParetoConfig(
        family=args.family, data=args.data, alphas=args.alpha, resolutions=args.res, phis=args.phi, out=args.out,
        epochs=args.epochs, budget_min=args.budget_min, pretrained=args.pretrained, quantize=args.quantize, seed=args.seed,
        batch_size=args.batch_size, workers=args.workers, device=args.device, cpus_per_variant=cpus,
        target=args.target, target_options=options,
        threads=args.threads or (sorted({1, os.cpu_count() or 1}) if local else [1]), runs=args.runs,
        min_secs=args.min_secs, timeout=args.timeout, latency_budget=args.latency_budget,
        budget_precision=args.budget_precision, budget_threads=args.budget_threads)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def print_results(report: dict, title: str, wide: bool) -> None:
    """The table (variant, params, MACs, top-1 per file, the paired int8 - float32 change in points with
    its 95% interval, latency per thread count, size)."""
    from edgecnn.paired import change_text

    threads = report["threads"]
    columns = ["variant", "params", "MACs", "f32 top-1", "int8 top-1", "int8-f32 [95% CI]"]
    columns += [f"int8 ms {t}t" for t in threads] + [f"f32 ms {t}t" for t in threads] + ["int8 size", "f32 size"]
    rows = []
    for r in report["rows"]:
        f32, i8 = r.get("float32") or {}, r.get("int8") or {}
        if r.get("status") != "ok":
            rows.append([r["variant"], *["-"] * (len(columns) - 2), "error"])
            continue
        rows.append([r["variant"], human_count(r["params"]), human_count(r["macs"]), _pct(f32.get("top1")),
                     _pct(i8.get("top1")) + ("" if i8.get("verified") in (True, None) else " !"),
                     change_text(r.get("int8_change"), digits=1),
                     *[f"{i8['latency_ms'][str(t)]:.2f}" if str(t) in i8.get("latency_ms", {}) else "-" for t in threads],
                     *[f"{f32['latency_ms'][str(t)]:.2f}" if str(t) in f32.get("latency_ms", {}) else "-" for t in threads],
                     human_bytes(i8["bytes"]) if i8 else "-", human_bytes(f32["bytes"]) if f32 else "-"])
    optional = ["f32 size", "params", *[f"f32 ms {t}t" for t in threads], "MACs", "int8 size",
                *[f"int8 ms {t}t" for t in threads[1:]]]
    print_table(title, columns, rows, ["left"] + ["right"] * (len(columns) - 1), optional=optional, wide=wide)
    if any((r.get("int8") or {}).get("verified") is False for r in report["rows"]):
        print("!: the int8 file disagrees with PyTorch beyond the verification bound (kept: its top-1 is measured)")


def run_pareto_cmd(args: argparse.Namespace) -> int:
    from edgecnn.pipelines.frontier import summary
    from edgecnn.pipelines.pareto import RowLog, run_pareto

    cfg = _config(args)
    show = not args.json and sys.stderr.isatty()
    try:
        result = run_pareto(cfg, args.executor, args.ray_address,
                            on_row=lambda r: show and print(f"{r['variant']}: {r['status']}", file=sys.stderr))
    except KeyboardInterrupt as exc:
        kept = len(RowLog(os.path.join(cfg.out, "rows.jsonl")).finished())
        print(f"edgecnn: interrupted ({signal_name(exc)}); {kept} finished variant(s) kept in {cfg.out}/rows.jsonl: "
              f"run the same command again to resume", file=sys.stderr)
        return exit_status(exc)
    report = summary(result.rows, cfg.latency_budget, cfg.budget_precision, cfg.budget_threads)
    report.update(out=str(result.out), seconds=round(result.seconds, 1))
    failed = [r for r in result.rows if r.get("status") != "ok"]
    if args.json:
        emit_json(report)
    else:
        print_results(report, f"{cfg.family} on {cfg.data}, target {cfg.target} (top-1 % of the .tflite files "
                              f"on the test split; median ms, batch 1)", args.wide)
        for p, per in report["frontier"].items():
            for t, names in per.items():
                print(f"{p} frontier at {t} thread(s): {' -> '.join(names) or '-'}")
        budget = report["budget"]
        if budget:
            chosen = budget["pick"]
            where = f"{budget['precision']}, {budget['threads']} thread(s)"
            if chosen:
                print(f"within {budget['latency_ms']:g} ms ({where}): {chosen['variant']}, top-1 "
                      f"{_pct(chosen['top1'])}%, {chosen['latency_ms']:.2f} ms: {chosen['path']}")
                print(f"next: {chosen['next']}")
            else:
                print(f"no variant runs within {budget['latency_ms']:g} ms ({where})")
        print(f"files: {result.out}/rows.jsonl, results.json, results.csv, pareto.png")
    for r in failed:
        print(f"edgecnn: error: {r['variant']}: {r.get('error')}", file=sys.stderr)
    return 2 if failed else 0
