"""Training on several processes or machines: DistributedDataParallel under ``torchrun``.

``torchrun`` (or ``edgecnn train --nproc N``, which runs it) starts one process per GPU or CPU
share and sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; :func:`session` joins them in a process
group (gloo on CPU, NCCL on CUDA, one GPU per process) and returns a :class:`Dist`.

Batch and steps: ``--batch-size`` is the *global* batch, the images of one optimizer step, split
evenly among the processes (each takes every ``world``-th sample of the epoch's permutation). So N
processes compute the same steps on the same samples as one process (BatchNorm statistics aside,
which are per process unless ``--sync-bn``), the learning rate follows the global batch (linear
scaling: default peak lr = base lr x batch/256), and a step count means the same at every world
size: a run resumes with a different number of processes and continues at the same global step.

Failure: a process that raises writes one line to torchrun's error file and exits; the elastic
agent then stops the others (a process killed outright, e.g. by the out-of-memory killer, is
noticed the same way), and collectives give up after ``EDGECNN_DIST_TIMEOUT_S`` seconds (default
600) should a machine vanish without closing its connections.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Iterator

import torch
from torch import nn

from edgecnn.errors import EdgeCNNError
from edgecnn.train.evaluate import EvalResult

TIMEOUT_ENV, DEFAULT_TIMEOUT_S = "EDGECNN_DIST_TIMEOUT_S", 600.0
LAUNCHED_ENV = "EDGECNN_LAUNCHED"  # set by launch(): workers leave the error line to the launcher
LOST = "lost contact with the other processes"


class DistributedError(EdgeCNNError):
    """A process of a distributed run failed; the run was stopped."""

    exit_code = 1


@dataclass(frozen=True)
class Dist:
    """This process's place in the run; ``Dist()`` is a plain single-process run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and draws progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world

    def local_batch(self, batch_size: int) -> int:
        """Images per process and step of a global ``batch_size``."""
        if batch_size % self.world:
            raise EdgeCNNError(f"--batch-size {batch_size} (the global batch) does not split evenly among "
                               f"{self.world} processes; use a multiple of {self.world}")
        return batch_size // self.world

    def describe(self, batch_size: int, lr: float, lr_rule: str) -> str:
        return (f"distributed: {self.world} processes ({self.backend}); global batch {batch_size} = {self.world} x "
                f"{batch_size // self.world} images per process; peak lr {lr:.4g} ({lr_rule})")

    def meta(self, batch_size: int) -> dict[str, Any]:
        """How the run was split, for checkpoint metadata and the resume state."""
        return {"world_size": self.world, "backend": self.backend, "global_batch_size": batch_size,
                "batch_size_per_process": batch_size // self.world}

    def device(self, device: torch.device) -> torch.device:
        """One GPU per process: ``cuda:LOCAL_RANK`` (whatever index ``--device`` named)."""
        return torch.device("cuda", self.local_rank) if self.enabled and device.type == "cuda" else device

    def prepare(self, model: nn.Module, sync_bn: bool, device: torch.device) -> nn.Module:
        """``model`` with SyncBatchNorm layers when asked (CUDA only: PyTorch has no CPU kernel)."""
        if not (sync_bn and self.enabled):
            return model
        if device.type != "cuda":
            raise EdgeCNNError("--sync-bn needs CUDA GPUs (PyTorch's SyncBatchNorm has no CPU implementation)")
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """DistributedDataParallel over the parameters that train now (call again when that changes).
        Buffers stay per process during the epoch; :meth:`average_buffers` joins them at its end."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        import inspect  # torch >= 2.13 renamed broadcast_buffers (deprecated) to forward_sync_buffers

        names = inspect.signature(DistributedDataParallel).parameters
        no_sync = "forward_sync_buffers" if "forward_sync_buffers" in names else "broadcast_buffers"
        return DistributedDataParallel(model, device_ids=ids, **{no_sync: False})

    def _comm(self, values: list[float] | torch.Tensor, op: Any = None) -> torch.Tensor:
        import torch.distributed as dist

        t = torch.as_tensor(values, dtype=torch.float64)
        t = t.to(self.device(torch.device("cuda" if self.backend == "nccl" else "cpu")))
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
        return t.cpu()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process (pickled: only among the processes of this run)."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def reduce_partial(self, p: dict[str, float]) -> dict[str, float]:
        """The training sums of all processes: loss, correct, images added up; seconds the slowest's."""
        if not self.enabled:
            return p
        import torch.distributed as dist

        sums = self._comm([p["loss_sum"], p["correct"], p["seen"]])
        seconds = float(self._comm([p["seconds"]], dist.ReduceOp.MAX)[0])
        return {"loss_sum": float(sums[0]), "correct": int(sums[1]), "seen": int(sums[2]), "seconds": seconds}

    @torch.no_grad()
    def average_buffers(self, *modules: nn.Module) -> None:
        """Mean of every floating-point buffer (BatchNorm running statistics) over the processes, so
        all of them evaluate and save the same model."""
        if not self.enabled:
            return
        import torch.distributed as dist

        for module in modules:
            for b in module.buffers():
                if torch.is_floating_point(b):
                    dist.all_reduce(b, op=dist.ReduceOp.SUM)
                    b.div_(self.world)

    def reduce_eval(self, r: EvalResult) -> EvalResult:
        """One result over the shards of all processes (every process gets the same numbers).

        Correct counts come back exactly from ``top1 * images`` (integers far below 2**53);
        throughputs add up, since the shards run at the same time."""
        if not self.enabled:
            return r
        hits = [round(a * c) if c else 0 for a, c in zip(r.per_class, r.per_class_images)]
        k = len(hits)
        t = self._comm([r.images, r.top1 * r.images, r.top5 * r.images, r.loss * r.images, r.images_per_s,
                        r.end_to_end_images_per_s, *r.per_class_images, *hits]).tolist()
        n = max(round(t[0]), 1)
        counts = [round(c) for c in t[6:6 + k]]
        per_class = [round(h) / c if c else float("nan") for h, c in zip(t[6 + k:], counts)]
        return replace(r, images=round(t[0]), top1=round(t[1]) / n, top5=round(t[2]) / n, loss=t[3] / n,
                       per_class=per_class, per_class_images=counts, images_per_s=t[4],
                       end_to_end_images_per_s=t[5])


def rank_from_env() -> int:
    return int(os.environ.get("RANK", "0"))


def _write_error_file(message: str) -> None:
    """torchrun's per-process error file: its failure report (and :func:`launch`) shows ``message``."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        with open(path, "w") as f:
            json.dump({"message": message, "timestamp": int(time.time())}, f)


@contextmanager
def session(device: str) -> Iterator[Dist]:
    """Join the run torchrun started (``WORLD_SIZE`` > 1), else a single-process :class:`Dist`.

    Errors leave as one line naming the rank; a collective that fails because another process died
    is reported as such (``LOST``), so the launcher can name the process that failed first."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield Dist()
        return
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    kind = "cpu"
    try:
        kind = _device_kind(device)
        if kind == "cuda":
            torch.cuda.set_device(local_rank)
        backend = "nccl" if kind == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=_timeout_s()))
        yield Dist(rank=rank, world=world, local_rank=local_rank, backend=backend)
        dist.destroy_process_group()
    except EdgeCNNError as exc:
        _fail(exc.__class__, f"rank {rank}/{world}: {exc}", exc.exit_code)
    except KeyboardInterrupt as exc:  # the agent stopping this process, or Ctrl-C: the launcher says so
        if os.environ.get(LAUNCHED_ENV):
            raise SystemExit(128 + getattr(exc, "signum", signal.SIGINT)) from None
        raise
    except torch.OutOfMemoryError:
        _fail(EdgeCNNError, f"rank {rank}/{world}: out of memory on {kind}; lower --batch-size", 1)
    except RuntimeError as exc:  # NCCL raises DistError; gloo a RuntimeError from its sources
        if not (isinstance(exc, dist.DistError) or "gloo" in str(exc)):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        _fail(DistributedError, f"rank {rank}/{world}: {LOST} ({first[:200]})", 1)


def _device_kind(device: str) -> str:
    """``cpu`` or ``cuda``: the device types with a process-group backend (gloo, NCCL)."""
    from edgecnn.train.device import resolve_device

    kind = resolve_device(device).type
    if kind not in ("cpu", "cuda"):
        raise EdgeCNNError(f"distributed training runs on CPUs (gloo) or CUDA GPUs (NCCL), not {kind}; "
                           f"pass --device cpu")
    return kind


def _timeout_s() -> float:
    try:
        return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    except ValueError:
        raise EdgeCNNError(f"${TIMEOUT_ENV} must be a number of seconds, got {os.environ[TIMEOUT_ENV]!r}") from None


def _fail(kind: type[EdgeCNNError], message: str, code: int) -> None:
    _write_error_file(message)
    if os.environ.get(LAUNCHED_ENV):  # the launcher prints the one line
        raise SystemExit(code)
    err = kind(message)
    err.exit_code = code
    raise err from None


def _failure_line(failures: dict[int, Any], world: int) -> tuple[str, int]:
    """The first real failure as one line: not a process the agent stopped (killed by SIGTERM or
    SIGINT, or exiting with an interrupt's status 128 + signal) or one that only lost contact
    (``LOST``); among the rest the earliest, then the agent's order."""
    def secondary(item: tuple[int, Any]) -> tuple[bool, int]:
        f = item[1]
        stopped = f.exitcode in (-signal.SIGTERM, -signal.SIGINT) or f.exitcode >= 128
        return (stopped or LOST in str(f.message), f.timestamp)

    rank, f = min(failures.items(), key=secondary)
    if f.exitcode < 0:
        return (f"rank {rank}/{world} (pid {f.pid}) was killed by {f.signal_name()}; "
                f"all {world} processes were stopped", 1)
    if isinstance(f.message, str) and f.message.startswith("rank "):
        return f"{f.message}; all {world} processes were stopped", f.exitcode
    return (f"rank {rank}/{world} (pid {f.pid}) failed with exit code {f.exitcode}; "
            f"all {world} processes were stopped", 1)


def launch(nproc: int, argv: list[str], module: str = "edgecnn") -> None:
    """Run ``python -m MODULE ARGV`` in ``nproc`` local processes under torchrun's elastic agent
    (standalone rendezvous on a free port, no restarts). Returns when all succeeded; raises
    :class:`DistributedError` with one line naming the failed rank otherwise."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    os.environ[LAUNCHED_ENV] = "1"
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0",
                                         "-m", module])
    args.training_script_args = list(argv)  # not parsed: torchrun's parser would take --nproc for its own
    quiet = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
             if n.startswith("torch.distributed")]
    levels = [q.level for q in quiet]
    for q in quiet:  # the agent's own warnings ("closing signal SIGTERM", ...) would bury the one line
        q.setLevel(logging.CRITICAL)
    try:
        run(args)
    except ChildFailedError as exc:
        line, code = _failure_line(exc.failures, nproc)
        err = DistributedError(line)
        err.exit_code = code
        raise err from None
    except SignalException as exc:  # Ctrl-C (SIGINT) or SIGTERM: the agent stopped every process
        err = DistributedError(f"interrupted ({exc.sigval.name}): all {nproc} processes were stopped; --resume "
                               f"continues from the last completed epoch")
        err.exit_code = 128 + int(exc.sigval)  # 130 for Ctrl-C, 143 for SIGTERM, like every command
        raise err from None
    finally:
        os.environ.pop(LAUNCHED_ENV, None)
        for q, level in zip(quiet, levels):
            q.setLevel(level)
