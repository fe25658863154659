"""Model statistics: parameters, MACs, weight bytes and peak activation memory.

Convention: one MAC is one multiply-accumulate. MACs are counted by
``torch.utils.flop_counter.FlopCounterMode`` (which reports FLOPs = 2 x MACs for convolutions and
matrix products) on a batch-1 forward pass, so they cover convolutions and fully connected layers
only, as the MobileNet/EfficientNet papers count "mult-adds". torchvision's "GFLOPS" column is the
same quantity (MACs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgecnn.errors import EdgeCNNError


@dataclass(frozen=True)
class ModelStats:
    """Sizes for a batch-1 input of ``input_shape`` (N, C, H, W).

    ``params``: trainable parameters; ``macs``: multiply-accumulates per image;
    ``weight_bytes_*``: parameter storage at that precision (bytes);
    ``peak_activation_bytes``: the largest input+output footprint of any single layer, fp32 (bytes);
    an in-place layer or a view counts its buffer once, and BatchNorm (folded into the conv before
    it at export) none.
    """

    params: int
    macs: int
    input_shape: tuple[int, int, int, int]
    weight_bytes_fp32: int
    weight_bytes_fp16: int
    weight_bytes_int8: int
    peak_activation_bytes: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters (buffers such as BatchNorm running stats excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(_tensor_bytes(o) for o in obj.values())
    return 0


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def model_stats(model: nn.Module, res: int | None = None, in_chans: int | None = None) -> ModelStats:
    """Measure ``model`` on one ``in_chans`` x ``res`` x ``res`` image.

    A model built under ``torch.device("meta")`` is measured from shapes alone, without arithmetic.
    ``res`` and ``in_chans`` default to those recorded on a zoo model (``model.edgecnn_config``).
    """
    cfg = getattr(model, "edgecnn_config", None)
    if res is None:
        if cfg is None:
            raise EdgeCNNError("model_stats needs res= for a model not built by edgecnn.create_model")
        res = cfg.default_res
    if cfg is not None:
        cfg.spec.check_res(res)
        in_chans = cfg.in_chans if in_chans is None else in_chans
    in_chans = 3 if in_chans is None else in_chans
    device = next(iter(model.parameters()), torch.empty(0)).device  # "meta" models cost no compute
    x = torch.zeros(1, in_chans, res, res, device=device)

    peak = 0

    def hook(_module, inputs, output):
        nonlocal peak
        first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        aliased = first is not None and isinstance(output, torch.Tensor) and (
            output is first or (output._base is not None
                                and any(output._base is t for t in (first, first._base))))
        # an in-place op or a view (ReLU(inplace=True), Flatten) needs no second buffer
        peak = max(peak, _tensor_bytes(inputs) + (0 if aliased else _tensor_bytes(output)))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    # BatchNorm folds into the preceding conv at export and costs no MACs; skipping it here also
    # avoids its slow decomposition under FlopCounterMode.
    norms = [m for m in leaves if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.forward = _identity
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
    except RuntimeError as exc:
        raise EdgeCNNError(f"model does not accept a {in_chans}x{res}x{res} input: {exc}") from None
    finally:
        for h in handles:
            h.remove()
        for m in norms:
            del m.forward
        model.train(was_training)

    n_weights = sum(p.numel() for p in model.parameters())
    return ModelStats(
        params=count_params(model),
        macs=counter.get_total_flops() // 2,
        input_shape=(1, in_chans, res, res),
        weight_bytes_fp32=4 * n_weights,
        weight_bytes_fp16=2 * n_weights,
        weight_bytes_int8=n_weights,
        peak_activation_bytes=peak,
    )
