"""AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization",
arXiv:2004.10568): each int8 weight is rounded up or down to minimise its layer's output error on
calibration data, instead of to the nearest grid point.

:func:`adaround` works on a *converted* PT2E graph (:func:`edgecnn.quantize.ptq.quantize_pt2e`),
where each conv/linear weight is a float parameter (BatchNorm folded in) followed by
``quantize_per_channel -> dequantize_per_channel`` with constant scales. Per layer:

1. Its input activations, as the quantised graph computes them (int8 inputs, nearest-rounded
   weights upstream: one pass over the calibration images for all layers), sampled as at most
   about ``rows`` rows (conv: the input patch of a random output position; linear: a random input
   row), the same number from each image.
2. Soft rounding ``W~ = s * clamp(floor(W/s) + h(V), qmin, qmax)``, ``h(V) = clamp(sigmoid(V) *
   (zeta - gamma) + gamma, 0, 1)`` (zeta 1.1, gamma -0.1), ``V`` starting where ``h`` is the
   fractional part; Adam on ``||op(x, W~) - op(x, W)||^2 + lam * sum(1 - |2h - 1|^beta)``, the
   regulariser off for the first 20% of the iterations, then ``beta`` going linearly from 20 to 2
   (the paper's schedule). The first term is the paper's squared Frobenius norm of one image's
   output map, estimated from sampled rows (sum over channels, mean over rows, times the output
   positions per image), so ``lam`` = 0.01 weighs it as in the paper.
3. Hard rounding ``h >= 0.5``; kept only where its output MSE is below nearest rounding's on the
   rows of the last quarter of the calibration images, which the optimisation did not see (else
   the layer stays nearest and the report says so). The chosen integers
   times the scale become the layer's float parameter (a new tensor: the float model's own weights
   stay as they were): the graph's own q/dq (nearest) reproduces them exactly (checked) and the
   scales stay as calibrated, so the .tflite holds these integers.

The bias is not changed (the paper's method): with AdaRound, bias correction is off by default in
``edgecnn quantize`` because the rounding already removes the mean output shift it corrects.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx import GraphModule, Node

from edgecnn.console import progress_range
from edgecnn.quantize.report import _layer_name

ZETA, GAMMA = 1.1, -0.1
BETA_START, BETA_END = 20.0, 2.0
WARMUP = 0.2  # share of the iterations without the rounding regulariser
DEFAULT_ITERATIONS = 300
DEFAULT_BATCH = 256  # sampled rows per Adam step
DEFAULT_ROWS = 2048  # sampled rows per layer (its inputs, spread over all calibration images)
DEFAULT_LR = 1e-2
DEFAULT_LAMBDA = 0.01
CONV, LINEAR = torch.ops.aten.conv2d.default, torch.ops.aten.linear.default


def _weight_quant(node: Node) -> tuple[Node, Node] | None:
    """(get_attr of the float weight, its quantize_per_channel node) for a conv/linear whose weight
    goes through quantize_per_channel -> dequantize_per_channel; None otherwise."""
    dq = node.args[1] if len(node.args) > 1 else None
    if not (isinstance(dq, Node) and "dequantize_per_channel" in str(dq.target)):
        return None
    q = dq.args[0]
    if not (isinstance(q, Node) and "quantize_per_channel" in str(q.target) and isinstance(q.args[0], Node)
            and q.args[0].op == "get_attr"):
        return None
    return q.args[0], q


def _conv_args(node: Node) -> tuple[list[int], list[int], list[int], int]:
    """(stride, padding, dilation, groups) of an ``aten.conv2d`` node, defaults filled in."""
    names = ("stride", "padding", "dilation", "groups")
    defaults = ([1, 1], [0, 0], [1, 1], 1)
    values = [node.args[3 + i] if len(node.args) > 3 + i else node.kwargs.get(k, d)
              for i, (k, d) in enumerate(zip(names, defaults))]
    pair = [list(v) * (2 // len(v)) if isinstance(v, (list, tuple)) else [v, v] for v in values[:3]]
    return pair[0], pair[1], pair[2], int(values[3])


class _Layer:
    """One conv/linear: its weight's quantisation and the input rows sampled for it."""

    def __init__(self, graph: GraphModule, node: Node, attr: Node, quant: Node) -> None:
        self.attr, self.name = attr, _layer_name(node)
        self.weight = graph.get_parameter(attr.target)
        scale, zero, self.axis, self.qmin, self.qmax, self.dtype = quant.args[1:7]
        self.scale = graph.get_buffer(scale.target) if isinstance(scale, Node) else scale
        self.zero = graph.get_buffer(zero.target) if isinstance(zero, Node) else zero
        self.conv = node.target == CONV
        self.stride, self.padding, self.dilation, self.groups = _conv_args(node) if self.conv else ([1, 1], [0, 0], [1, 1], 1)
        self.rows: list[torch.Tensor] = []
        self.positions = 1  # output positions per image (rows an image gives)

    def sample(self, x: torch.Tensor, n: int, gen: torch.Generator) -> None:
        """Keep ``n`` random rows of this layer's input ``x`` (batch 1): conv patches or linear rows."""
        if not self.conv:
            flat = x.reshape(-1, x.shape[-1])
            self.positions = flat.shape[0]
            self.rows.append(flat[torch.randperm(flat.shape[0], generator=gen)[:n]])
            return
        kh, kw = self.weight.shape[2:]
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        xp = F.pad(x[0], (pw, pw, ph, ph))
        ho = (xp.shape[1] - dh * (kh - 1) - 1) // sh + 1
        wo = (xp.shape[2] - dw * (kw - 1) - 1) // sw + 1
        self.positions = ho * wo
        pos = torch.randperm(ho * wo, generator=gen)[:n]
        oh, ow = pos // wo * sh, pos % wo * sw
        cols = [xp[:, oh + i * dh, ow + j * dw] for i in range(kh) for j in range(kw)]  # each (C, n)
        self.rows.append(torch.stack(cols, -1).permute(1, 0, 2).reshape(len(pos), -1))  # (c, i, j) order

    def apply(self, rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The layer's output (rows, out channels) for input ``rows`` (rows, groups * K), no bias."""
        g = self.groups
        w = weight.reshape(g, weight.shape[0] // g, -1)  # (groups, out per group, K)
        return torch.einsum("rgk,gok->rgo", rows.reshape(rows.shape[0], g, -1), w).reshape(rows.shape[0], -1)

    def grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point shaped to broadcast over the weight (per output channel)."""
        shape = (-1,) + (1,) * (self.weight.dim() - 1)
        return (torch.as_tensor(self.scale, dtype=self.weight.dtype).reshape(shape),
                torch.as_tensor(self.zero).reshape(shape).to(self.weight.dtype))

    def codes(self) -> torch.Tensor:
        """The int8 codes the graph's own quantize_per_channel gives the current weight (nearest)."""
        return torch.ops.quantized_decomposed.quantize_per_channel(
            self.weight.detach(), self.scale, self.zero, self.axis, self.qmin, self.qmax, self.dtype)


class _Collector(fx.Interpreter):
    """Runs the quantised graph and hands each watched node's input activation to its layer."""

    def __init__(self, graph: GraphModule, layers: dict[Node, _Layer], per_image: int, gen: torch.Generator):
        super().__init__(graph)
        self.layers, self.per_image, self.gen = layers, per_image, gen

    def run_node(self, n: Node):
        if n in self.layers:
            self.layers[n].sample(self.env[n.args[0]], self.per_image, self.gen)
        return super().run_node(n)


def _skip_reason(graph: GraphModule, node: Node) -> str | None:
    """Why ``node`` (a conv2d/linear) cannot be rounded adaptively; None when it can."""
    found = _weight_quant(node)
    if found is None:
        return "weight not quantised per channel (kept float or per-tensor)"
    attr, quant = found
    if quant.args[3] != 0:
        return f"weight quantised along axis {quant.args[3]}, not 0"
    if attr.target not in dict(graph.named_parameters()) or len(attr.users) != 1:
        return "weight shared or not a parameter"
    return None


def _optimise(layer: _Layer, rows: torch.Tensor, target: torch.Tensor, *, iterations: int, batch: int, lr: float,
              lam: float, gen: torch.Generator) -> torch.Tensor:
    """AdaRound's soft-rounding optimisation; returns the chosen integers (in the int8 range)."""
    scale, zero = layer.grid()
    w = layer.weight.detach()
    base = torch.floor(w / scale)
    frac = (w / scale - base).clamp(0, 1)
    v = torch.logit(((frac - GAMMA) / (ZETA - GAMMA)).clamp(1e-4, 1 - 1e-4)).requires_grad_(True)
    opt = torch.optim.Adam([v], lr=lr)
    lo, hi = layer.qmin - zero, layer.qmax - zero  # the int8 range on the zero-point-free grid
    warm = int(WARMUP * iterations)
    for it in range(iterations):
        h = (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)
        soft = scale * torch.clamp(base + h, lo, hi)
        pick = torch.randint(rows.shape[0], (min(batch, rows.shape[0]),), generator=gen)
        loss = (layer.apply(rows[pick], soft) - target[pick]).pow(2).sum(1).mean() * layer.positions
        if it >= warm:
            beta = BETA_END + (BETA_START - BETA_END) * (1 - (it - warm) / max(1, iterations - warm))
            loss = loss + lam * (1 - (2 * h - 1).abs().pow(beta)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    up = (v.detach() >= 0).to(w.dtype)  # h(V) >= 0.5 exactly where V >= 0
    return torch.clamp(base + up, lo, hi)


@torch.no_grad()
def _mse(layer: _Layer, rows: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, chunk: int = 512) -> float:
    """Mean squared output error (per element) of ``weight`` against the float weight over ``rows``."""
    total = sum(float((layer.apply(rows[i:i + chunk], weight) - target[i:i + chunk]).pow(2).sum())
                for i in range(0, rows.shape[0], chunk))
    return total / target.numel()


def adaround(graph: GraphModule, calib: torch.Tensor, *, iterations: int = DEFAULT_ITERATIONS,
             batch: int = DEFAULT_BATCH, rows: int = DEFAULT_ROWS, lr: float = DEFAULT_LR,
             lam: float = DEFAULT_LAMBDA, seed: int = 0, progress: bool = True) -> dict:
    """Round every per-channel int8 conv2d/linear weight of the converted PT2E ``graph`` with AdaRound,
    in place (its float weight parameters are replaced by exact grid points; scales unchanged).

    ``calib`` (N, C, H, W) are the calibration images as ``graph`` takes them (batch 1 each).
    Per layer: about ``rows`` sampled input rows, ``iterations`` Adam steps (learning rate ``lr``)
    on ``batch`` of those from the first three quarters of the images, rounding regulariser weight
    ``lam``; seeded by ``seed``. Returns the report: ``layers`` (name, op, weights, rows_fit,
    rows_held, nearest/adaround output MSE per element on the held rows, i.e. those of the last
    quarter of the images (on the fitted rows with fewer than 4 images, rows_held 0), share of
    weights rounded the other way, ``kept``: "adaround" or "nearest" where AdaRound was not
    better), ``skipped`` ({layer: reason}) and ``seconds``.
    """
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    layers: dict[Node, _Layer] = {}
    skipped: dict[str, str] = {}
    for node in graph.graph.nodes:
        if node.op != "call_function" or node.target not in (CONV, LINEAR):
            continue
        reason = _skip_reason(graph, node)
        if reason is None:
            layers[node] = _Layer(graph, node, *_weight_quant(node))
        else:
            skipped[_layer_name(node)] = reason
    if layers:
        collector = _Collector(graph, layers, math.ceil(rows / calib.shape[0]), gen)
        with torch.no_grad():
            for i in progress_range(range(calib.shape[0]), "AdaRound: collecting layer inputs", progress):
                collector.run(calib[i:i + 1])
    report = []
    for layer in progress_range(list(layers.values()), "AdaRound: rounding layers", progress):
        n_held = len(layer.rows) // 4  # the last quarter of the images judges; fewer than 4: the fitted rows
        fit = torch.cat(layer.rows[:len(layer.rows) - n_held])
        held = torch.cat(layer.rows[len(layer.rows) - n_held:]) if n_held else fit
        layer.rows = []
        w = layer.weight.detach()
        with torch.no_grad():
            target, held_target = layer.apply(fit, w), layer.apply(held, w)
        ints = _optimise(layer, fit, target, iterations=iterations, batch=batch, lr=lr, lam=lam, gen=gen)
        scale, zero = layer.grid()
        nearest = layer.codes().to(w.dtype)
        before = _mse(layer, held, held_target, scale * (nearest - zero))
        after = _mse(layer, held, held_target, scale * ints)
        kept = "adaround" if after < before else "nearest"
        if kept == "adaround":
            _write(graph, layer, scale * ints, ints + zero)
        report.append({"layer": layer.name, "op": "conv2d" if layer.conv else "linear", "weights": w.numel(),
                       "rows_fit": int(fit.shape[0]), "rows_held": int(held.shape[0]) if n_held else 0,
                       "mse_nearest": before, "mse_adaround": after,
                       "changed": round(float((ints + zero != nearest).float().mean()), 4), "kept": kept})
    return {"iterations": iterations, "rows": rows, "batch": batch, "layers": report, "skipped": skipped,
            "rounded": sum(r["kept"] == "adaround" for r in report), "seconds": round(time.perf_counter() - t0, 2)}


@torch.no_grad()
def _write(graph: GraphModule, layer: _Layer, weight: torch.Tensor, codes: torch.Tensor) -> None:
    """Give the graph a new parameter ``weight`` for the layer (not in place: the exported graph's
    parameters may be the float model's own tensors) and check its q/dq gives back ``codes``."""
    owner, _, leaf = layer.attr.target.rpartition(".")
    layer.weight = nn.Parameter(weight.clone(), requires_grad=layer.weight.requires_grad)
    setattr(graph.get_submodule(owner), leaf, layer.weight)
    if not torch.equal(layer.codes().to(codes.dtype), codes):
        raise AssertionError(f"AdaRound: {layer.name}'s written weights are not exact grid points")
