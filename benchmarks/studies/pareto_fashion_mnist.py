"""Issue 12's benchmark: a MobileNetV1 alpha x res grid on Fashion-MNIST through ``edgecnn pareto``,
int8 and float32 on LiteRT at 1 and 2 threads, with the local executor and then the same grid
with the Ray executor (a local Ray instance of ``--ray-cpus`` CPUs, one CPU per variant).

    python benchmarks/studies/pareto_fashion_mnist.py [--alpha 0.25,0.5,0.75,1.0] [--res 32,48,64]
        [--epochs 1] [--budgets 0.1,0.3] [--skip-ray] [--out runs/pareto-study]

Writes ``benchmarks/results/pareto_fashion_mnist.json`` (or ``--results``: the table, the frontier,
the picks at each budget, wall time per executor) and its figure beside it (``.png``: the local run
at 1 thread, with the larger budget's line). The local executor trains one variant at a time with ``--local-cpus`` torch threads (default: all cores);
Ray runs ``--ray-cpus`` variants at once with one thread each: both use the whole machine, so the
wall times say what Ray's parallelism buys here (with 2 cores, at most 2 variants at once, and the
measurements share the cores with the other variant's training). A thread count changes the order
of float sums, so the two runs' accuracies agree closely, not bit for bit; the table is the local run's.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from edgecnn.benchmarks.measure import machine_info
from edgecnn.io import write_text
from edgecnn.pipelines.frontier import summary, write_plot
from edgecnn.pipelines.pareto import ParetoConfig, run_pareto, start_ray

RESULTS = Path(__file__).resolve().parents[1] / "results"


def remeasure(cfg: ParetoConfig, data: str) -> list[dict]:
    """Re-time every finished local row's files on this machine (one process per point, as the run
    did) and fill in missing paired int8 intervals; returns the rows in grid order."""
    from edgecnn.pipelines.pareto import RowLog, evaluate_tflite, int8_change, make_target, measure_variant

    log = RowLog(Path(cfg.out) / "rows.jsonl")
    with make_target(cfg) as target:
        target.prepare()
        for row in list(log.rows):
            if row.get("status") != "ok":
                continue
            if "int8_change" not in row:
                correct = {p: evaluate_tflite(Path(row[p]["path"]), data, {})["correct"] for p in ("float32", "int8")}
                row["int8_change"] = int8_change(correct["float32"], correct["int8"])
            for p in ("float32", "int8"):
                row[p]["latency_ms"], row[p]["peak_memory_bytes"] = {}, {}
            log.add(measure_variant(row, cfg, target))
            print(row["variant"], {p: row[p]["latency_ms"] for p in ("int8", "float32")}, flush=True)
    return run_pareto(cfg).rows  # every variant finished: only the reports are rewritten, in grid order


def plot(rows: list[dict], path: Path, budget_ms: float, cpu: str) -> None:
    """The local run's figure at 1 thread with the larger budget's line."""
    write_plot(rows, path, 1, budget_ms=budget_ms, title=f"MobileNetV1 on Fashion-MNIST, int8 LiteRT on {cpu}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", default="0.25,0.5,0.75,1.0")
    ap.add_argument("--res", default="32,48,64")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--budgets", default="0.1,0.3", help="latency budgets in ms (int8, 1 thread)")
    ap.add_argument("--ray-cpus", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--local-cpus", type=int, default=os.cpu_count() or 1, help="torch threads of the local run")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--data", default="fashion-mnist", help="e.g. a small IDX slice to try the script")
    ap.add_argument("--out", type=Path, default=Path("runs/pareto-study"))
    ap.add_argument("--results", type=Path, default=RESULTS / "pareto_fashion_mnist.json")
    ap.add_argument("--remeasure", action="store_true",
                    help="no training: time the local run's files again (a quieter machine), add the paired "
                         "int8 intervals rows lack, and rewrite the results with --walls")
    ap.add_argument("--walls", help="with --remeasure: the runs' wall times, e.g. local=1969,ray=2027 (seconds)")
    ap.add_argument("--note", default="", help="a sentence on the conditions of the run, kept in the results")
    args = ap.parse_args()

    def config(executor: str) -> ParetoConfig:
        return ParetoConfig(family="mobilenet", data=args.data, alphas=[float(a) for a in args.alpha.split(",")],
                            resolutions=[int(r) for r in args.res.split(",")], out=str(args.out / executor),
                            epochs=args.epochs, workers=0, device="cpu", threads=[1, 2],
                            cpus_per_variant=args.local_cpus if executor == "local" else 1)

    executors = ("local",) if args.skip_ray else ("local", "ray")
    walls, all_rows = {}, {}
    if args.remeasure:
        walls = {k: float(v) for k, v in (w.split("=") for w in args.walls.split(","))} if args.walls else {}
        all_rows = {e: run_pareto(config(e)).rows for e in executors}
        all_rows["local"] = remeasure(config("local"), args.data)
    for executor in () if args.remeasure else executors:
        if executor == "ray":
            import ray

            start_ray(num_cpus=args.ray_cpus, include_dashboard=False)
        t0 = time.perf_counter()
        result = run_pareto(config(executor), executor=executor)
        walls[executor] = round(time.perf_counter() - t0, 1)
        if executor == "ray":
            ray.shutdown()
        all_rows[executor] = result.rows
    rows = all_rows["local"]
    by_executor = {e: {r["variant"]: r for r in result_rows} for e, result_rows in all_rows.items()}
    agreement = {v: {e: by_executor[e].get(v, {}).get("int8", {}).get("top1") for e in by_executor}
                 for v in by_executor["local"]} if len(by_executor) > 1 else None
    picks = {b: summary(rows, float(b), "int8", 1)["budget"]["pick"] for b in args.budgets.split(",")}
    report = {**summary(rows), "picks_int8_1_thread": picks, "wall_seconds": walls, "ray_cpus": args.ray_cpus,
              "local_cpus": args.local_cpus, "int8_top1_local_vs_ray": agreement, "machine": machine_info(),
              "data": args.data, "note": args.note,
              "command": f"python benchmarks/studies/pareto_fashion_mnist.py --alpha {args.alpha} --res {args.res} "
                         f"--epochs {args.epochs} --data {args.data}"}
    write_text(args.results, json.dumps(report, indent=2, default=str) + "\n")
    plot(rows, args.results.with_suffix(".png"), float(args.budgets.split(",")[-1]), report["machine"]["cpu"])
    print(json.dumps({"wall_seconds": walls, "frontier": report["frontier"], "picks": {
        b: p and p["variant"] for b, p in picks.items()}}, indent=2))


if __name__ == "__main__":
    main()
