"""``edgecnn pareto`` as a Python API: which width x resolution to ship, measured on the shipped files.

>>> result = run_pareto(ParetoConfig(family="mobilenet", alphas=[0.25, 0.5], resolutions=[32, 48],
...                                  data="fashion-mnist", epochs=1))
>>> result.rows[0]["int8"]["top1"], result.rows[0]["int8"]["latency_ms"]["1"]

Every variant of the grid is one job: train it on the data (or fine-tune from ImageNet weights) ->
export float32 and int8 ``.tflite`` files, verified -> evaluate those files on the data's test
split (top-1, top-5) -> measure latency, peak memory and size on the target, one process per point.

Output folder (``ParetoConfig.out``, default ``runs/pareto/<family>``):

- ``rows.jsonl``: one row per finished variant, rewritten atomically as each one finishes. A
  re-run with the same settings skips the variants finished there (resume), under either
  executor; failed variants (``status`` 'error' with a one-line ``error``) are tried again.
- ``variants/<id>/train/`` (checkpoints) and ``variants/<id>/export/`` (the ``.tflite`` files).
- ``results.json``, ``results.csv``, ``pareto.png``: written by :func:`write_reports`.

Executors: ``local`` runs the variants one after another in this process. ``ray`` makes each
variant's train/export/evaluate a Ray task that asks for ``cpus_per_variant`` CPUs (and a GPU when
training runs on CUDA); the measurements go to one Ray actor per target, pinned to the driver's
node, which runs one method call at a time: one device measures one thing at a time. Rows stream
back to the driver, which writes ``rows.jsonl``. On a cluster of several machines ``out`` must be
a folder every node sees at the same path (NFS, or a single-node cluster).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from edgecnn.errors import EdgeCNNError, shorten
from edgecnn.io import write_text
from edgecnn.signals import Interrupted

if TYPE_CHECKING:
    from edgecnn.benchmarks.target import Target

EXECUTORS = ("local", "ray")
PRECISIONS = ("int8", "float32")


@dataclass(frozen=True)
class Variant:
    """One point of the grid: a zoo model, its scaling knobs (alpha or phi) and the input size (px;
    None: what training picks for the data)."""

    model: str
    knobs: dict = field(default_factory=dict)
    res: int | None = None

    @property
    def id(self) -> str:
        """A file-name-safe label, e.g. ``mobilenet_v1_0.25_32`` (``..._auto`` without a res)."""
        knobs = [f"{v:.2f}" if k == "alpha" else f"{k}{v:g}" for k, v in sorted(self.knobs.items())]
        return "_".join([self.model, *knobs, str(self.res or "auto")])


@dataclass
class ParetoConfig:
    """Everything that decides a trade-off run. Times in seconds; ``threads``: CPU thread counts
    measured on the target; ``cpus_per_variant``: CPUs one variant trains with (torch threads;
    Ray's ``num_cpus``)."""

    family: str  # a zoo name (expanded with alphas/resolutions/phis) or a comma list of zoo names
    data: str
    alphas: list[float] | None = None
    resolutions: list[int] | None = None
    phis: list[float] | None = None
    out: str | None = None  # default runs/pareto/<family>
    epochs: int = 1
    budget_min: float | None = None  # minutes of training per variant: sets each variant's epochs (train.budget)
    pretrained: str | None = None  # "imagenet": fine-tune where the zoo has weights
    quantize: list[str] = field(default_factory=lambda: list(PRECISIONS))
    seed: int = 0
    batch_size: int | None = None  # None: the family recipe's (edgecnn.train.recipes)
    workers: int | None = 0  # DataLoader workers of training and evaluation
    device: str = "cpu"
    cpus_per_variant: int = 1
    target: str = "local"  # local, ssh://[user@]host[:port] or adb
    target_options: dict = field(default_factory=dict)  # ssh_key, ssh_options, remote_python, ...
    threads: list[int] = field(default_factory=lambda: [1])
    runs: int = 20
    min_secs: float = 0.5
    timeout: float = 600.0  # per measured point
    latency_budget: float | None = None  # ms: the reports name the most accurate variant within it
    budget_precision: str = "int8"  # the file the budget is for
    budget_threads: int | None = None  # the thread count it is for (default the fewest measured)

    def __post_init__(self) -> None:
        bad = [p for p in self.quantize if p not in PRECISIONS]
        if bad or not self.quantize:
            raise EdgeCNNError(f"--quantize takes int8 and/or float32; got {bad[0] if bad else 'nothing'!r}")
        if self.out is None:
            self.out = str(Path("runs") / "pareto" / self.family.replace(",", "+"))

    @property
    def settings(self) -> dict:
        """What a finished row must have been made with to be reused on resume."""
        return {k: getattr(self, k) for k in ("data", "epochs", "budget_min", "pretrained", "quantize", "seed", "batch_size",
                                              "target", "threads", "runs", "min_secs")}


def expand_grid(family: str, alphas: Iterable[float] | None = None, resolutions: Iterable[int] | None = None,
                phis: Iterable[float] | None = None) -> list[Variant]:
    """The variants of ``family``: every alpha x phi x res given, or each model of a comma list.

    A knob the model does not have is an error (``--alpha`` for ResNet, ``--phi`` for MobileNet).
    """
    from edgecnn.benchmarks.sweep import knob_grid
    from edgecnn.models import get_spec

    names = [n.strip() for n in family.split(",") if n.strip()]
    if not names:
        raise EdgeCNNError("pareto needs a model family or a comma list of zoo names")
    variants = []
    for name in names:
        spec = get_spec(name)
        for knob, values in (("alpha", alphas), ("phi", phis)):
            if values and knob not in spec.tunable:
                raise EdgeCNNError(f"{spec.name} has no {knob} knob (it takes: {', '.join(spec.tunable) or 'none'})")
        variants += [Variant(spec.name, knobs, res)
                     for knobs, res in knob_grid({"alpha": alphas, "phi": phis}, resolutions)]
    return list({v.id: v for v in variants}.values())


def row_key(variant: Variant, cfg: ParetoConfig) -> str:
    """The identity of a row in ``rows.jsonl``: the variant and the settings that made it."""
    return json.dumps({"variant": asdict(variant), **cfg.settings}, sort_keys=True, default=str)


# ---------------------------------------------------------------- adapters over the other pipelines

def train_variant(variant: Variant, cfg: ParetoConfig, out: Path) -> dict:
    """``edgecnn train``'s code; returns the training summary (``best`` checkpoint path, test top-1)
    and, with a time budget, the plan that set the epochs (:func:`edgecnn.train.budget.plan_epochs`)."""
    from edgecnn.train import TrainConfig, train

    def config(epochs: int) -> TrainConfig:
        return TrainConfig(model=variant.model, data=cfg.data, out=str(out), knobs=dict(variant.knobs),
                           res=variant.res, epochs=epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                           workers=cfg.workers, device=cfg.device, pretrained=cfg.pretrained)

    plan = None
    if cfg.budget_min is not None:
        from edgecnn.train.budget import plan_epochs

        plan = plan_epochs(config(1), 60 * cfg.budget_min).to_dict()
    summary = train(config(plan["epochs"] if plan else cfg.epochs), overwrite=True, progress=False).to_dict()
    return {**summary, "budget": plan}


def export_variant(checkpoint: Path, cfg: ParetoConfig, out: Path) -> dict:
    """``edgecnn export``'s code on the checkpoint: float32 and/or int8 files, verified on real
    images; returns the export report. A file that disagrees with PyTorch is kept (its row says
    ``verified: false``): its accuracy on the test split, measured next, shows by how much."""
    from edgecnn.errors import VerificationError
    from edgecnn.pipelines.export import ExportOptions, ModelRequest, export

    options = ExportOptions(precisions=tuple(cfg.quantize), out=out, measure=False, progress=False)
    try:
        report = export(ModelRequest(checkpoint), options=options)
    except VerificationError as exc:  # the files are written: their measured accuracy tells the rest
        report = exc.report
    return report.to_dict()


def evaluate_tflite(path: Path, data: str, preprocess: dict, workers: int = 0, batch_size: int = 256) -> dict:
    """Top-1 and top-5 (fractions) of a ``.tflite`` file on ``data``'s test split (else val), as
    ``edgecnn eval FILE --data DATA`` scores it (:func:`edgecnn.pipelines.evaluate.evaluate`)."""
    from edgecnn.pipelines.evaluate import EvalOptions, evaluate

    report = evaluate(path, data, EvalOptions(workers=workers, batch_size=batch_size,
                                              crop_pct=preprocess.get("crop_pct")))
    r = report.result
    return {"top1": r.top1, "top5": r.top5, "images": r.images, "split": report.split, "correct": r.correct}


def make_target(cfg: ParetoConfig) -> Target:
    """The benchmark target of ``cfg.target`` (:func:`edgecnn.pipelines.bench.target_from_url`)."""
    from edgecnn.pipelines.bench import target_from_url

    options = {k: v for k, v in cfg.target_options.items() if v is not None}
    return target_from_url(cfg.target, **options)


def bench_files(files: list[Path], cfg: ParetoConfig, target: Target) -> list[dict]:
    """``edgecnn bench``'s harness on ``target``: every file x thread count, one process per point
    (LiteRT locally; on the board or phone for remote targets); returns the benchmark rows."""
    from edgecnn.benchmarks.measure import Protocol
    from edgecnn.benchmarks.target import LocalTarget

    protocol = Protocol(num_runs=cfg.runs, min_secs=cfg.min_secs, warmup_min_secs=min(0.5, cfg.min_secs))
    if isinstance(target, LocalTarget):
        points = target.points(files, cfg.threads, protocol, runtimes=["litert"])
    else:
        points = target.points(files, cfg.threads, protocol)
    return [target.run_point(p, timeout=cfg.timeout) for p in points]


# ---------------------------------------------------------------- one variant

def _error_row(row: dict, exc: BaseException) -> dict:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return {**row, "status": "error", "error": shorten(text, 300)}


def prepare_variant(variant: Variant, cfg: ParetoConfig) -> dict:
    """Train, export and evaluate one variant (no measurement); returns its row, ``status`` 'ok' or
    'error' with the one-line reason. Ctrl-C (or SIGTERM) is not caught: it stops the run."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.cpus_per_variant)  # the same under either executor: the same numbers
    try:
        return _prepare(variant, cfg)
    finally:
        torch.set_num_threads(threads)


def _prepare(variant: Variant, cfg: ParetoConfig) -> dict:
    from edgecnn.paired import pack_hits
    from edgecnn.train.trainer import TrainingInterrupted

    folder = Path(cfg.out) / "variants" / variant.id
    row: dict[str, Any] = {"key": row_key(variant, cfg), "variant": variant.id, "model": variant.model,
                           "knobs": variant.knobs, "res": variant.res, "status": "ok", "seconds": {}}
    try:
        t0 = time.perf_counter()
        summary = train_variant(variant, cfg, folder / "train")
        t1 = time.perf_counter()
        report = export_variant(Path(summary["best"]), cfg, folder / "export")
        t2 = time.perf_counter()
        row.update(res=report["res"], params=report["params"], macs=report["macs"], checkpoint=summary["best"],
                   export_dir=report["out_dir"], train_test_top1=(summary["test"] or {}).get("top1"),
                   epochs=summary["epochs"], budget=summary["budget"])
        for f in report["files"]:
            scores = evaluate_tflite(Path(f["path"]), cfg.data, report["preprocess"], cfg.workers or 0)
            verified = f["verification"]["passed"] if f["verification"] else None
            row[f["precision"]] = {"path": f["path"], "bytes": f["bytes"], "top1": scores["top1"],
                                   "top5": scores["top5"], "eval_images": scores["images"], "verified": verified,
                                   "hits": pack_hits(scores["correct"]), "latency_ms": {}, "peak_memory_bytes": {}}
        row["seconds"] = {"train": round(t1 - t0, 1), "export": round(t2 - t1, 1),
                          "eval": round(time.perf_counter() - t2, 1)}
        if "int8" in row and "float32" in row:
            row["int8_drop"] = row["float32"]["top1"] - row["int8"]["top1"]
            row["int8_change"] = int8_change(hits(row["float32"]), hits(row["int8"]))
    except TrainingInterrupted as exc:  # the run stops as the signal asked: 128 + its number
        raise Interrupted(exc.exit_code - 128) from None
    except Exception as exc:  # any failure of one variant is its row, not the end of the run
        return _error_row(row, exc)
    return row


def hits(scores: dict) -> Any:
    """Per-image correctness (bool array, test-split order) of one file's scores in a row."""
    from edgecnn.paired import unpack_hits

    return unpack_hits(scores["hits"], scores["eval_images"])


def int8_change(float_correct: Any, int8_correct: Any) -> dict:
    """int8 minus float32 top-1 on the same test images, in points, with its 95% bootstrap interval,
    the images each file alone got right and McNemar's p (:func:`edgecnn.paired.paired_difference`)."""
    from edgecnn.paired import paired_difference

    d = paired_difference(float_correct, int8_correct)
    return {"points": d.diff, "low": d.low, "high": d.high, "float_only": d.a_only, "int8_only": d.b_only,
            "p_value": d.p_value}


def measure_variant(row: dict, cfg: ParetoConfig, target: Any) -> dict:
    """Add latency (median ms), peak memory (bytes) per thread count to a prepared row."""
    if row.get("status") != "ok":
        return row
    t0 = time.perf_counter()
    files = [Path(row[p]["path"]) for p in PRECISIONS if p in row]
    try:
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise EdgeCNNError(f"{missing[0]} is not on this machine: on a Ray cluster of several nodes "
                               f"--out must be a folder every node sees at the same path")
        for b in bench_files(files, cfg, target):
            entry = row[b["precision"] if b.get("precision") in row else _precision_of(row, b["path"])]
            if b.get("status") != "ok":
                raise EdgeCNNError(f"benchmark of {Path(b['path']).name}: {b.get('error')}")
            entry["latency_ms"][str(b["threads"])] = b["median_ms"]
            entry["peak_memory_bytes"][str(b["threads"])] = b.get("peak_memory_bytes")
    except Exception as exc:
        return _error_row(row, exc)
    row["seconds"]["bench"] = round(time.perf_counter() - t0, 1)
    return row


def _precision_of(row: dict, path: str) -> str:
    return next(p for p in PRECISIONS if p in row and Path(row[p]["path"]).name == Path(path).name)


# ---------------------------------------------------------------- the run

class RowLog:
    """``rows.jsonl``: rows kept in order, the whole file rewritten atomically after every change."""

    def __init__(self, path: Path) -> None:
        from edgecnn.benchmarks.sweep import load_rows

        self.path = Path(path)
        self.rows = load_rows(self.path)

    def finished(self) -> dict[str, dict]:
        return {r["key"]: r for r in self.rows if r.get("status") == "ok"}

    def add(self, row: dict) -> None:
        self.rows = [r for r in self.rows if r["key"] != row["key"]] + [row]
        write_text(self.path, "".join(json.dumps(r, default=str) + "\n" for r in self.rows))


@dataclass
class ParetoResult:
    """The rows of this run's grid (in grid order; None for a variant that did not finish) and the
    folder holding everything."""

    config: ParetoConfig
    rows: list[dict]
    out: Path
    seconds: float


def run_pareto(cfg: ParetoConfig, executor: str = "local", ray_address: str | None = None,
               on_row: Callable[[dict], None] | None = None) -> ParetoResult:
    """Run every variant of ``cfg``'s grid not finished in ``cfg.out/rows.jsonl`` and write the reports.

    ``executor``: ``local`` or ``ray`` (``ray_address``: ``auto``, ``ray://HOST:10001``, or None to
    join the Ray instance this process already has, else start one here). ``on_row`` is called
    with each row as it is written. Ctrl-C keeps the finished rows (and writes the reports of
    what finished) before the interrupt goes on.
    """
    from edgecnn.pipelines.frontier import write_reports

    if executor not in EXECUTORS:
        raise EdgeCNNError(f"--executor takes {' or '.join(EXECUTORS)}; got {executor!r}")
    variants = expand_grid(cfg.family, cfg.alphas, cfg.resolutions, cfg.phis)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log = RowLog(out / "rows.jsonl")
    done = log.finished()
    todo = [v for v in variants if row_key(v, cfg) not in done]

    def record(row: dict) -> None:
        log.add(row)
        if on_row is not None:
            on_row(row)

    t0 = time.perf_counter()
    try:
        if todo:
            (_run_ray if executor == "ray" else _run_local)(todo, cfg, record, ray_address)
    finally:
        finished = {r["key"]: r for r in log.rows}
        rows = [finished[k] for k in (row_key(v, cfg) for v in variants) if k in finished]
        if rows:
            write_reports(rows, out, cfg)
    return ParetoResult(cfg, rows, out, time.perf_counter() - t0)


def _run_local(todo: list[Variant], cfg: ParetoConfig, record: Callable[[dict], None], _address: Any) -> None:
    with make_target(cfg) as target:
        target.prepare()
        for v in todo:
            record(measure_variant(prepare_variant(v, cfg), cfg, target))


class TargetActor:
    """One measuring device as a Ray actor: its calls run one at a time (Ray's default for an actor
    with ``max_concurrency=1``), so two variants are never measured at once on it."""

    def __init__(self, cfg: ParetoConfig) -> None:
        self.cfg = cfg
        self.target = make_target(cfg)
        self.target.prepare()

    def measure(self, row: dict) -> dict:
        return measure_variant(row, self.cfg, self.target)

    def close(self) -> None:
        self.target.close()


def start_ray(address: str | None = None, **kwargs: Any) -> None:
    """``ray.init`` for edgecnn's tasks. A Ray instance started here runs its workers at nice 0:
    Ray's default (``RAY_worker_niceness`` 15) lets any other job on a shared machine take the
    CPUs from training and, worse, from the measuring actor's benchmark processes. An explicit
    ``RAY_worker_niceness`` in the environment wins; a cluster started by ``ray start`` keeps its own."""
    import os

    import ray

    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(address=address, log_to_driver=False, **kwargs)


def _run_ray(todo: list[Variant], cfg: ParetoConfig, record: Callable[[dict], None], address: str | None) -> None:
    try:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    except ImportError:
        raise EdgeCNNError("--executor ray needs Ray: pip install 'edgecnn[ray]'") from None
    started = not ray.is_initialized()
    if started:
        start_ray(address)
    try:
        here = ray.get_runtime_context().get_node_id()  # the files, the board or phone are reachable from here
        actor = ray.remote(max_concurrency=1, num_cpus=0)(TargetActor).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote(cfg)
        # a GPU per variant when training asks for CUDA, or for "auto" on a cluster that has GPUs
        cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
        task = ray.remote(prepare_variant).options(num_cpus=cfg.cpus_per_variant, num_gpus=int(cuda), max_retries=0)
        pending = {task.remote(v, cfg): v for v in todo}  # train, export, evaluate
        measuring: dict[Any, Variant] = {}  # on the target, one at a time
        try:
            while pending or measuring:
                (ref,), _ = ray.wait([*pending, *measuring], num_returns=1)
                prepared = ref in pending
                variant = pending.pop(ref) if prepared else measuring.pop(ref)
                try:
                    row = ray.get(ref)
                except Exception as exc:  # a worker that died (out of memory, killed): that variant's row
                    row = _error_row({"key": row_key(variant, cfg), "variant": variant.id, "model": variant.model,
                                      "knobs": variant.knobs, "res": variant.res}, exc)
                if prepared and row.get("status") == "ok":
                    measuring[actor.measure.remote(row)] = variant
                else:
                    record(row)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            ray.kill(actor)  # stops the measurement under way
            raise
        ray.get(actor.close.remote())
        ray.kill(actor)
    finally:
        if started:
            ray.shutdown()
