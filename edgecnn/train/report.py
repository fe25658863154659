"""``metrics.csv`` (one row per epoch) and ``curves.png`` (loss and accuracy), both written atomically."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from edgecnn.io import atomic_path, write_text

COLUMNS = ("epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5",
           "train_images_per_s", "eval_images_per_s", "epoch_s", "precise_bn_images", "best")


def write_metrics_csv(path: Path, history: list[dict]) -> Path:
    """All epochs so far; accuracies as fractions, throughput in images/s, time in seconds."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return write_text(path, buf.getvalue())


def write_curves_png(path: Path, history: list[dict], title: str) -> Path:
    """Train/val loss and accuracy per epoch (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(9, 3.6), dpi=100)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train (with label smoothing)")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "o-", label="val")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.plot(epochs, [100 * r["train_top1"] for r in history], "o-", label="train (augmented)")
    ax_acc.plot(epochs, [100 * r["val_top1"] for r in history], "o-", label="val")
    ax_acc.set(xlabel="epoch", ylabel="top-1 %", title="accuracy")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
