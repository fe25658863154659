"""Cross-layer equalisation and bias correction (Nagel et al. 2019, "Data-Free Quantization Through
Weight Equalization and Bias Correction", arXiv:1906.04721), applied to the float PyTorch model.

Steps, each on a copy of the model:

1. :func:`fold_batchnorm`: every Conv2d followed only by a BatchNorm2d absorbs it
   (``torch.nn.utils.fusion.fuse_conv_bn_eval``); the BatchNorm becomes ``nn.Identity``.
2. :func:`find_pairs`: consecutive convolutions ``conv1 -> [act] -> conv2`` whose intermediate
   tensor feeds nothing else (no residual branch), through activations that commute with a
   positive per-channel scale (ReLU, ReLU6 -- see below -- LeakyReLU, Identity, Dropout).
   ``conv2`` is a dense conv or a depthwise conv (MobileNets' expand -> depthwise -> project).
3. :func:`equalize`: for each pair, scale output channel i of ``conv1`` by ``1/s_i`` and input
   channel i of ``conv2`` by ``s_i`` with ``s_i = sqrt(r1_i / r2_i)`` so both ranges become
   ``sqrt(r1_i * r2_i)`` (the paper's Eq. 8); repeat over all pairs until the scales settle
   (a depthwise conv sits in two pairs).
4. :func:`correct_bias`: the expected output shift that per-channel int8 weight rounding causes,
   ``E[(W_q - W) x]``, estimated with the float model's mean input per channel on calibration
   images (the empirical variant of the paper's Section 4.2), is subtracted from each bias.

**The ReLU6 caveat** (the paper's Section 5.1): ``relu6(x / s) != relu6(x) / s``, so scaling
through a ReLU6 changes the model. A pair is equalised across a ReLU6 only where the clamp at 6 is
idle on the calibration images (at most :data:`RELU6_CLAMP_LIMIT` of its inputs above 6); that
ReLU6 is then replaced by ReLU, as the paper does for MobileNetV2, which leaves the float function
as it was on those images. A ReLU6 whose clamp is active stays, and its pair is not equalised
(conv + ReLU6 is quantised as one op on [0, 6] either way, :func:`edgecnn.quantize.ptq.annotate_conv_relu6`).
Measured on 32 ImageNet photos: MobileNetV2's ReLU6 inputs exceed 6 at a median fraction of 0 (its
worst site 9e-4), EfficientNet-Lite0's at 8e-4 (up to 8%: values up to 99), where the replacement
changed the float top-1 of half the images. Without calibration images no pair crosses a ReLU6.
:func:`equalize_model` reports the float model's top-1 agreement after the replacement; step 3
itself leaves the float function unchanged (tested with ``allclose``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from edgecnn.errors import EdgeCNNError

# Activations with f(x / s) = f(x) / s for s > 0 (ReLU6 only after replacement by ReLU).
HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.PReLU)
# Largest fraction of a ReLU6's inputs above 6 (on calibration images) that still lets a pair be
# equalised across it: MobileNetV2's sites are at 0-3e-6 but one (9e-4); EfficientNet-Lite0's at 1e-4-8e-2.
RELU6_CLAMP_LIMIT = 1e-5


@dataclass
class Pair:
    """Two convolutions equalised together; ``relu6`` is the ReLU6 between them (replaced), if any."""

    first: str
    second: str
    relu6: str | None = None


@dataclass
class EqualizeReport:
    """What :func:`equalize_model` did, and the per-channel weight range balance before/after.

    ``balance`` is the mean over conv weights of ``mean_i(r_i) / max_i(r_i)`` (r_i: the range of
    output channel i; 1.0 = all channels use the full int8 grid; the paper's "precision").
    """

    pairs: list[Pair] = field(default_factory=list)
    relu6_replaced: list[str] = field(default_factory=list)
    relu6_kept: list[str] = field(default_factory=list)  # active clamp: kept, and its pair not equalised
    balance_before: float = 0.0
    balance_after: float = 0.0
    bias_corrected: list[str] = field(default_factory=list)
    relu6_top1_agreement: float | None = None  # float model with ReLU6->ReLU vs original, on calib
    iterations: int = 0

    def to_dict(self) -> dict:
        return {"pairs": len(self.pairs), "relu6_replaced": len(self.relu6_replaced),
                "relu6_kept": len(self.relu6_kept),
                "balance_before": round(self.balance_before, 4), "balance_after": round(self.balance_after, 4),
                "bias_corrected_layers": len(self.bias_corrected), "iterations": self.iterations,
                "relu6_to_relu_top1_agreement": self.relu6_top1_agreement}


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent, _, leaf = name.rpartition(".")
    return (model.get_submodule(parent) if parent else model), leaf


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, leaf = _parent(model, name)
    setattr(parent, leaf, module)


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # data-dependent control flow etc.
        raise EdgeCNNError(f"cross-layer equalisation cannot trace this model ({exc.__class__.__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}); quantise without --cle") from None


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """``model`` outputs for ``x`` in batches of ``batch`` (bounded memory)."""
    return torch.cat([model(x[i:i + batch]) for i in range(0, x.shape[0], batch)])


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def fold_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold each BatchNorm2d into the Conv2d that alone feeds it (in place); returns (conv, bn) names."""
    modules = dict(model.named_modules())
    folded = []
    for node in _trace(model).graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.Conv2d):
            continue
        user = _only_user(node)
        if user is None or user.op != "call_module" or not isinstance(modules.get(user.target), nn.BatchNorm2d):
            continue
        _set_module(model, node.target, fuse_conv_bn_eval(modules[node.target], modules[user.target]))
        _set_module(model, user.target, nn.Identity())
        folded.append((node.target, user.target))
    return folded


def _is_depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def find_pairs(model: nn.Module) -> list[Pair]:
    """Consecutive (conv1, conv2) that can be equalised; see the module docstring."""
    modules = dict(model.named_modules())
    pairs = []
    for node in _trace(model).graph.nodes:
        first = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(first, nn.Conv2d):
            continue
        relu6, cur = None, _only_user(node)
        while cur is not None and cur.op == "call_module":
            mod = modules.get(cur.target)
            if isinstance(mod, nn.Conv2d):
                if mod.groups == 1 or _is_depthwise(mod):
                    pairs.append(Pair(node.target, cur.target, relu6))
                break
            if isinstance(mod, nn.ReLU6) and relu6 is None:
                relu6 = cur.target
            elif not isinstance(mod, HOMOGENEOUS):
                break
            cur = _only_user(cur)
    return pairs


def _out_ranges(conv: nn.Conv2d) -> torch.Tensor:
    """max |w| per output channel."""
    return conv.weight.detach().abs().flatten(1).amax(1)


def _in_ranges(conv: nn.Conv2d) -> torch.Tensor:
    """max |w| per input channel (a depthwise conv's channel i is its output channel i)."""
    w = conv.weight.detach().abs()
    return w.flatten(1).amax(1) if _is_depthwise(conv) else w.transpose(0, 1).flatten(1).amax(1)


def weight_balance(model: nn.Module) -> float:
    """Mean over Conv2d weights of ``mean_i(r_i) / max_i(r_i)`` (see :class:`EqualizeReport`)."""
    values = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.out_channels > 1:
            r = _out_ranges(m)
            values.append(float(r.mean() / r.max().clamp_min(1e-12)))
    return sum(values) / max(1, len(values))


@torch.no_grad()
def equalize(model: nn.Module, pairs: list[Pair], iterations: int = 20, tol: float = 1e-4) -> int:
    """Equalise ``pairs`` in place (their activations must already be positively homogeneous).

    Returns the number of sweeps until the largest scale moved less than ``tol`` from 1.
    """
    for sweep in range(1, iterations + 1):
        worst = 0.0
        for p in pairs:
            c1, c2 = model.get_submodule(p.first), model.get_submodule(p.second)
            r1, r2 = _out_ranges(c1), _in_ranges(c2)
            ok = (r1 > 1e-8) & (r2 > 1e-8)
            s = torch.where(ok, torch.sqrt(r1 / r2.clamp_min(1e-8)), torch.ones_like(r1))
            c1.weight.div_(s.view(-1, *([1] * (c1.weight.dim() - 1))))
            if c1.bias is not None:
                c1.bias.div_(s)
            if _is_depthwise(c2):
                c2.weight.mul_(s.view(-1, 1, 1, 1))
            else:
                c2.weight.mul_(s.view(1, -1, 1, 1))
            worst = max(worst, float((s - 1).abs().max()))
        if worst < tol:
            return sweep
    return iterations


def _fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel int8 (-127..127), as PT2E's PerChannelMinMaxObserver does."""
    scale = (w.abs().flatten(1).amax(1) / 127.0).clamp_min(2 ** -12)
    zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -127, 127)


@torch.no_grad()
def correct_bias(model: nn.Module, calib: torch.Tensor, batch: int = 16) -> list[str]:
    """Subtract the expected int8-weight-rounding error from every conv/linear bias (in place).

    ``calib`` (N, C, H, W) are normalised calibration images; the mean input of each layer is
    taken from the float model on them.
    """
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name):
        def record(_mod, inputs, _out):
            x = inputs[0]
            dims = [0] + list(range(2, x.dim())) if x.dim() > 2 else [0]
            sums[name] = sums.get(name, 0) + x.sum(dims)
            counts[name] = counts.get(name, 0) + x.numel() // x.shape[1]
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    try:
        predict(model, calib, batch)
    finally:
        for h in handles:
            h.remove()
    corrected = []
    for name, m in layers.items():
        if name not in sums:
            continue
        mean = sums[name] / counts[name]
        dw = _fake_quant_weight(m.weight) - m.weight
        if isinstance(m, nn.Linear):
            shift = dw @ mean
        else:  # the conv of dW over a constant input equal to the channel means (no padding)
            patch = mean.view(1, -1, 1, 1).expand(1, -1, *m.kernel_size)
            shift = F.conv2d(patch, dw, groups=m.groups, dilation=1).flatten()
        if m.bias is None:
            m.bias = nn.Parameter(torch.zeros(m.weight.shape[0], dtype=m.weight.dtype))
        m.bias.sub_(shift)
        corrected.append(name)
    return corrected


@torch.no_grad()
def _active_relu6(model: nn.Module, pairs: list[Pair], calib: torch.Tensor | None) -> list[str]:
    """The ReLU6s between pairs whose clamp at 6 acts on more than :data:`RELU6_CLAMP_LIMIT` of their
    inputs over ``calib`` (all of them without calibration images)."""
    names = sorted({p.relu6 for p in pairs if p.relu6 is not None})
    if calib is None or not names:
        return names
    above = dict.fromkeys(names, 0)
    total = dict.fromkeys(names, 0)

    def count(name: str):
        def hook(_module: nn.Module, inputs: tuple) -> None:  # before the (maybe in-place) clamp
            above[name] += int((inputs[0] > 6).sum())
            total[name] += inputs[0].numel()
        return hook

    hooks = [model.get_submodule(n).register_forward_pre_hook(count(n)) for n in names]
    try:
        predict(model, calib)
    finally:
        for h in hooks:
            h.remove()
    return [n for n in names if above[n] > RELU6_CLAMP_LIMIT * max(total[n], 1)]


def equalize_model(model: nn.Module, calib: torch.Tensor | None = None, *, cle: bool = True,
                   bias_correction: bool = True) -> tuple[nn.Module, EqualizeReport]:
    """A copy of ``model`` with BatchNorm folded, cross-layer equalised and bias-corrected.

    ``calib`` (normalised images) is needed for bias correction and to report how much the
    ReLU6 -> ReLU replacement changed the float model's top-1 (None skips both).
    """
    original = model.eval()
    model = copy.deepcopy(original).eval()
    report = EqualizeReport()
    fold_batchnorm(model)
    report.balance_before = weight_balance(model)
    if cle:
        pairs = find_pairs(model)
        report.relu6_kept = _active_relu6(model, pairs, calib)
        report.pairs = [p for p in pairs if p.relu6 is None or p.relu6 not in report.relu6_kept]
        for p in report.pairs:
            if p.relu6 is not None and p.relu6 not in report.relu6_replaced:
                old = model.get_submodule(p.relu6)
                _set_module(model, p.relu6, nn.ReLU(inplace=getattr(old, "inplace", False)))
                report.relu6_replaced.append(p.relu6)
        if calib is not None and report.relu6_replaced:
            a, b = predict(original, calib).argmax(1), predict(model, calib).argmax(1)
            report.relu6_top1_agreement = float((a == b).float().mean())
        report.iterations = equalize(model, report.pairs)
    report.balance_after = weight_balance(model)
    if bias_correction and calib is not None:
        report.bias_corrected = correct_bias(model, calib)
    return model, report
