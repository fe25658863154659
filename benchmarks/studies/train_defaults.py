"""Study: what ``edgecnn train``'s default recipe reaches in ONE epoch on Fashion-MNIST, per model family.

Each run is ``TrainConfig(model, knobs, data, epochs=1, val_split=0, workers=0)`` and nothing else,
i.e. ``edgecnn train MODEL --data fashion-mnist --epochs 1 --val-split 0 --workers 0``: the family
recipe of the edgecnn that is imported decides everything else (run it with ``PYTHONPATH`` pointing
at another checkout to measure that checkout's defaults, e.g. ``--label before``). With
``--val-split 0`` the validation split is the official 10,000-image test set, so the final
validation top-1 is the test top-1 (one epoch: nothing is selected on it).

Models in ``--full`` (default: MobileNetV2 alpha 0.35) train on all 60,000 training images and are
evaluated on all 10,000 test images; the others, to fit a shared 2-core CPU, on the first
``--subset-train`` training and ``--subset-test`` test images (the file order of Fashion-MNIST is
class-balanced). One model per family (:data:`FAMILY_MODELS`, the family's smallest).

Rows accumulate in ``--results`` (JSON; a re-run of the same label and model replaces its row) and
a Markdown table is written next to it. Seconds: the training loop's (``train_seconds``) and the
whole run's wall time, on a machine that may be shared: the 1-minute load average is recorded.

    PYTHONPATH=$PWD python benchmarks/studies/train_defaults.py --label after
    PYTHONPATH=/path/to/main python benchmarks/studies/train_defaults.py --label before --models mobilenet_v2
    python benchmarks/studies/train_defaults.py --trial lr16_64 --set lr=0.008 --threads 2   # one recipe trial
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# family -> (model, knobs): the family's smallest member
FAMILY_MODELS = {
    "mobilenet_v1": ("mobilenet_v1", {"alpha": 0.25}),
    "mobilenet_v2": ("mobilenet_v2", {"alpha": 0.35}),
    "mobilenet_v3": ("mobilenet_v3_small", {}),
    "efficientnet": ("efficientnet_b0", {}),
    "efficientnet_lite": ("efficientnet_lite0", {}),
    "squeezenet": ("squeezenet1_1", {}),
    "shufflenet_v2": ("shufflenet_v2_x0_5", {}),
    "lenet": ("lenet5", {}),
    "alexnet": ("alexnet", {}),
    "vgg": ("vgg11", {}),
    "googlenet": ("googlenet", {}),
    "inception_v3": ("inception_v3", {}),
    "resnet": ("resnet18", {}),
    "densenet": ("densenet121", {}),
    "convnext": ("convnext_tiny", {}),
}
COMMAND = "python benchmarks/studies/train_defaults.py --label LABEL [--models FAMILIES]"


def run_one(model: str, knobs: dict, data: str, out: Path, threads: int, overrides: dict | None = None) -> dict:
    """Train one epoch with the defaults (and ``overrides``: TrainConfig fields); the row of the results table."""
    import torch

    from edgecnn.models import get_spec
    from edgecnn.train import TrainConfig, train

    torch.set_num_threads(threads)
    start = time.perf_counter()
    cfg = TrainConfig(model=model, knobs=knobs, data=data, out=str(out), epochs=1, val_split=0, workers=0,
                      **(overrides or {}))
    result = train(cfg, overwrite=True, progress=False)
    row = result.history[-1]
    return {"family": get_spec(model).family, "model": model, "knobs": knobs, "res": result.preprocess.res,
            "train_images": row["train_images"], "test_images": _test_images(data),
            "train_seconds": round(result.train_seconds, 1), "wall_seconds": round(time.perf_counter() - start, 1),
            "test_top1": row["val_top1"], "test_top5": row["val_top5"], "train_loss": row["train_loss"],
            "config": {k: v for k, v in result.config.to_dict().items() if k not in ("data", "out", "model")},
            "peak_lr": result.config.peak_lr, "weight_decay": result.config.decay}


def _test_images(data: str) -> int:
    from edgecnn.data.datasets import open_dataset

    return len(open_dataset(data, val_split=0).split("val"))


def _edgecnn_commit() -> str:
    import edgecnn

    where = Path(edgecnn.__file__).resolve().parent
    try:
        return subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip() + ("" if not _dirty(where) else "+changes")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _dirty(where: Path) -> bool:
    return bool(subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip())


def write_markdown(path: Path, doc: dict) -> None:
    """One table: a row per (label, model), grouped by model."""
    from edgecnn.io import write_text

    lines = ["# edgecnn train: one epoch of Fashion-MNIST with the default recipe", "",
             f"CPU: {doc['cpu']}. Command: `{doc['command']}` (see the script's docstring).", "",
             "| family | model | label | edgecnn | res | train / test images | train s | wall s | load | "
             "test top-1 | optimizer, peak lr, batch, warm-up epochs, crop |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(doc["runs"], key=lambda r: (list(FAMILY_MODELS).index(r["family"])
                                                 if r["family"] in FAMILY_MODELS else 99, r["label"] != "before")):
        c = r["config"]
        knobs = "".join(f" {k}={v}" for k, v in r["knobs"].items())
        lines.append(f"| {r['family']} | {r['model']}{knobs} | {r['label']} | {r['edgecnn']} | {r['res']} | "
                     f"{r['train_images']:,} / {r['test_images']:,} | {r['train_seconds']:.0f} | "
                     f"{r['wall_seconds']:.0f} | {r['load_1min']} | {100 * r['test_top1']:.2f}% | "
                     f"{c['optimizer']}, {r['peak_lr']:.4g}, {c['batch_size']}, {c['warmup_epochs']:.2g}, "
                     f"{c['crop_scale']} |")
    lines += ["", "Rows with fewer than 59,904 training images ran on the first images of Fashion-MNIST's training "
              "and test files (a subset, to fit the CPU time); chance is 10%."]
    lines += [f"- {r['label']} {r['model']}: {r['note']}" for r in doc["runs"] if r.get("note")]
    if doc.get("trials"):  # runs with explicit flags that chose the recipe
        lines += ["", "## Trials that chose the recipe", "", doc["trials"]["what"], "",
                  "| trial | overrides | res | batch | train s | test top-1 |", "|---|---|---|---|---|---|"]
        lines += [f"| {t['name']} | `{json.dumps(t['overrides'])}` | {t['res']} | {t['batch_size']} | "
                  f"{t['train_seconds']:.0f} | {100 * t['test_top1']:.2f}% |" for t in doc["trials"]["runs"]]
    write_text(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    from edgecnn.benchmarks.measure import machine_info
    from edgecnn.data.datasets import subset_folder
    from edgecnn.io import write_text

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--label", default="after", help="name of this set of runs, e.g. before / after")
    p.add_argument("--models", default=",".join(FAMILY_MODELS),
                   help="comma-separated families (or model names) to run (default: every family)")
    p.add_argument("--full", default="mobilenet_v2", help="comma-separated families trained on all 60k images")
    p.add_argument("--subset-train", type=int, default=5000)
    p.add_argument("--subset-test", type=int, default=1000)
    p.add_argument("--ref", default=None, help="what the edgecnn imported is (default: its git commit)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the CPU is shared)")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks/results/train_defaults.json")
    p.add_argument("--trial", help="run one trial instead: MobileNetV2 0.35, one epoch of all 60k images, with the "
                   "--set overrides; recorded under 'Trials' (a re-run of the name replaces it)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                   help="a TrainConfig override of the trial, e.g. --set lr=0.008 --set batch_size=64")
    args = p.parse_args(argv)
    if args.trial:
        return run_trial(args)

    machine = machine_info()
    full = set(args.full.split(","))
    with tempfile.TemporaryDirectory(prefix="train_defaults-") as tmp:
        subset = None
        for name in args.models.split(","):
            family = next((f for f, (m, _) in FAMILY_MODELS.items() if name in (f, m)), None)
            if family is None:
                sys.exit(f"unknown family or model {name!r}: one of {', '.join(FAMILY_MODELS)}")
            model, knobs = FAMILY_MODELS[family]
            if family in full or model in full:
                data = "fashion-mnist"
            else:
                subset = subset or str(subset_folder(Path(tmp) / "subset", args.subset_train, args.subset_test))
                data = subset
            print(f"{args.label}: {model} {knobs} on {data} ...", file=sys.stderr, flush=True)
            try:
                row = run_one(model, knobs, data, Path(tmp) / model, args.threads)
            except Exception as exc:  # noqa: BLE001 (a failing family is a row, not the end of the study)
                if type(exc).__name__ == "TrainingInterrupted":  # Ctrl-C / SIGTERM: stop the study
                    raise
                row = {"family": family, "model": model, "knobs": knobs, "error": f"{type(exc).__name__}: {exc}"}
            row.update(label=args.label, edgecnn=args.ref or _edgecnn_commit(), load_1min=machine_info()["load_1min"],
                       torch_threads=args.threads)
            print(json.dumps({k: v for k, v in row.items() if k != "config"}), file=sys.stderr, flush=True)
            doc = json.loads(args.results.read_text()) if args.results.exists() else {"runs": []}  # re-read:
            doc.update(cpu=machine["cpu"], cores=machine["cores"], command=COMMAND)  # studies may run side by side
            doc["runs"] = [r for r in doc["runs"] if (r["label"], r["model"]) != (args.label, model)] + [row]
            write_text(args.results, json.dumps(doc, indent=1) + "\n")
            write_markdown(args.results.with_suffix(".md"), {**doc, "runs": [r for r in doc["runs"] if "error" not in r]})
            shutil.rmtree(Path(tmp) / model, ignore_errors=True)
    return 0


def run_trial(args: argparse.Namespace) -> int:
    """One recipe trial (see ``--trial``), appended to the results' trials table."""
    from edgecnn.benchmarks.measure import machine_info
    from edgecnn.io import write_text

    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    with tempfile.TemporaryDirectory(prefix="train_trial-") as tmp:
        row = run_one("mobilenet_v2", {"alpha": 0.35}, "fashion-mnist", Path(tmp), args.threads, overrides)
    trial = {"name": args.trial, "overrides": overrides, "res": row["res"], "batch_size": row["config"]["batch_size"],
             "test_top1": row["test_top1"], "train_seconds": row["train_seconds"], "edgecnn": _edgecnn_commit(),
             "torch_threads": args.threads, "load_1min": machine_info()["load_1min"]}
    print(json.dumps(trial), flush=True)
    doc = json.loads(args.results.read_text())
    doc["trials"]["runs"] = [t for t in doc["trials"]["runs"] if t["name"] != args.trial] + [trial]
    write_text(args.results, json.dumps(doc, indent=1) + "\n")
    write_markdown(args.results.with_suffix(".md"), {**doc, "runs": [r for r in doc["runs"] if "error" not in r]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
