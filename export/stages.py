"""The coding stages of a trained model as self-contained modules with typed signatures.

Every stage is what one engine file holds and what a backend runs (torch runs these modules,
onnxruntime/TensorRT run their exported graphs):

    analysis          x (B, 3, H, W)                      -> y (B, M, H/16, W/16)
    hyper_analysis    y                                   -> z (B, N, H/64, W/64)
    hyper_synthesis   z_hat                               -> hyper (B, 2M, H/16, W/16)
    synthesis         latent (B, M, h, w)                 -> x_hat (B, 3, 16h, 16w)
    temporal_k        reference [, gain]                  -> temporal (B, 2 C_k, h, w)
                                                             [, prediction (B, C_k, h, w)]
    side_k            hyper [, y_prev] [, temporal]       -> side (B, A_k, h, w)      once per group
    step_k            side, valid, windows...             -> mean, scale, new columns  one anti-diagonal
    recompute_k       [y_hat,] side, valid                -> mean, scale (whole tile)  naive/checkerboard/...

``step_k`` is the wavefront step in the column-major skewed layout (runtime/wavefront.py):
masks are baked into skewed Conv1d weights, so the graph is a short static-shaped chain of
Conv1d, ReLU, Mul, Add and Concat. Gains, the scale table and the factorized prior's tables
are data, not stages (``tables.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stcm.models.codec import STCM
from stcm.models.context import SpatialContext, anchors_like
from stcm.models.entropy_parameters import ParamAggregation
from stcm.models.layers import MaskedConv2d, MaskedResidualBlock
from stcm.models.quant import exact_layers
from stcm.contexts import context_variant
from stcm.manifest import StageSignature, TensorSpec


def skew_kernel(conv: MaskedConv2d) -> torch.Tensor:
    """(Cout, Cin, k, k) masked kernel -> (Cout, Cin, k, 2r+1) kernel over skewed columns:
    tap (di, dj) moves to (di, e = di + dj); diagonal masks keep only e <= 0. Exact layers
    give their quantized kernel: the same terms, so the same exact sums."""
    weight = conv.masked_weight().detach()
    cout, cin, k, _ = weight.shape
    r = k // 2
    out = weight.new_zeros(cout, cin, k, 2 * r + 1)
    for a in range(k):
        di = a - r
        for e in range(-2 * r, 1):
            dj = e - di
            if -r <= dj <= r:
                out[:, :, a, e + 2 * r] = weight[:, :, a, dj + r]
    return out


def _column_taps(conv: MaskedConv2d) -> list[tuple[int, int]]:
    """The (window column, row offset index) pairs of the skewed kernel that the mask keeps:
    a diagonal 5x5 mask keeps 10 (strict) or 15 of the 25, so only those are computed."""
    mask = conv.mask[0, 0]
    k = mask.shape[-1]
    r = k // 2
    taps = []
    for col in range(2 * r + 1):  # window column; col = 2r is the current anti-diagonal
        for a in range(k):
            dj = col - 2 * r - (a - r)
            if -r <= dj <= r and mask[a, dj + r] > 0:
                taps.append((col, a))
    return taps


def _coded(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor | None]:
    weight, bias = conv.coded_weights() if hasattr(conv, "coded_weights") else (conv.weight,
                                                                                conv.bias)
    return weight.detach().clone(), None if bias is None else bias.detach().clone()


@dataclass(frozen=True)
class _Grid:
    """An exact layer's input grid: integers in [low, top] times 2^exponent."""

    exponent: int
    low: int
    top: int


def _grid(layer: nn.Module | None) -> _Grid | None:
    """The input grid of an exact layer or ``ActQuant``; None for float layers."""
    q = getattr(layer, "act", layer)
    if q is None or not hasattr(q, "exponent"):
        return None
    if q.parts:
        raise ValueError("per-part exponents do not occur inside the step networks")
    return _Grid(int(q.exponent.item()), q.low, q.top)


def _scaled(t: torch.Tensor | None, factor) -> torch.Tensor | None:
    """``t * factor`` for power-of-two factors, checked exact (no overflow or subnormal)."""
    if t is None:
        return None
    out = t * factor
    tiny = torch.finfo(out.dtype).tiny
    if not bool(torch.isfinite(out).all()) or bool(((out != 0) & (out.abs() < tiny)).any()):
        raise ArithmeticError("folding a grid scale into weights left float32's exact range")
    return out


class _Requant(nn.Module):
    """Moves a value onto an exact layer's input grid (``dst``), as integers.

    ``src`` None: the value is already in units of ``dst`` ("pre-quantized": its producer's
    weights carry 1/2^dst.exponent), so only rounding and clamping remain. A grid: the value
    holds integers on ``src`` and is rescaled by 2^(src - dst), a power of two: exact, and
    integer already when src >= dst. ``real``: plain values (the decoded latent), scaled by
    1/2^dst.exponent and rounded. A ReLU in front is folded into the clamp of an unsigned
    grid. Float models have no grids: this is then the ReLU or nothing."""

    def __init__(self, dst: _Grid | None, src: _Grid | None = None, relu: bool = False,
                 real: bool = False):
        super().__init__()
        self.relu = relu and (dst is None or dst.low < 0)
        self.factor = None
        self.round = dst is not None
        self.bounds = None if dst is None else (dst.low, dst.top)
        shift = None
        if dst is not None and real:
            shift = -dst.exponent
        elif dst is not None and src is not None:
            shift = src.exponent - dst.exponent
            self.round = shift < 0
        if shift:
            self.factor = math.ldexp(1.0, shift)

    def is_identity_after(self, src: _Grid | None) -> bool:
        """True when every value on ``src``'s grid (rounded and clamped there) passes
        unchanged: no rescale, no rounding, and bounds that hold ``src``'s."""
        return (src is not None and not self.relu and self.factor is None and not self.round
                and (self.bounds is None or (self.bounds[0] <= src.low
                                             and src.top <= self.bounds[1])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.relu:
            x = torch.relu(x)
        if self.factor is not None:
            x = x * self.factor
        if self.round:
            x = torch.round(x)
        return x if self.bounds is None else torch.clamp(x, *self.bounds)


def _batched(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """weight (Cout, K) @ x (B, K, rows) + bias as one batched GEMM. In eager mode this is what
    the step's convolutions run: PyTorch's CPU Conv1d loops over the batch with per-sample
    im2col, 4-10x slower than this at 4-16 tiles per call (5-15 us either way at one tile).
    Exported graphs keep Conv nodes. Exact layers give the same integer sums either way."""
    if bias is None:
        return torch.matmul(weight, x)
    return torch.baddbmm(bias.view(1, -1, 1), weight.expand(x.shape[0], -1, -1), x)


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export()


class _Pointwise(nn.Module):
    """A 1x1 Conv2d over a column (B, C, rows) whose input arrives as integers on its grid:
    the grid's scale is folded into the weights, and ``out_scale`` (the next grid's 1/2^e, per
    output row or one for all) into weights and bias, so the output is pre-quantized."""

    def __init__(self, conv: nn.Conv2d, out_scale=1.0):
        super().__init__()
        weight, bias = _coded(conv)
        grid = _grid(conv)
        in_scale = 1.0 if grid is None else math.ldexp(1.0, grid.exponent)
        out = torch.as_tensor(out_scale, dtype=weight.dtype).reshape(-1)
        self.register_buffer("weight", _scaled(weight[:, :, 0, 0], out.view(-1, 1) * in_scale))
        self.register_buffer("bias", _scaled(bias, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _exporting():
            return F.conv1d(x, self.weight.unsqueeze(-1), self.bias)
        return _batched(self.weight, self.bias, x)


class _MergeColumns(torch.autograd.Function):
    """(B, cols, C, rows) -> (B, cols * C, rows). Exported as one Reshape to the constant shape
    [0, cols * C, -1] (0 keeps the batch axis) instead of the tracer's Shape, Slice, Slice,
    Concat chain that computes the same shape at run time: 4 fewer operators per narrow
    masked layer of every step call (the narrow groups' calls are mostly per-operator cost)."""

    @staticmethod
    def forward(ctx, x, merged: int):
        return x.flatten(1, 2)

    @staticmethod
    def symbolic(g, x, merged: int):
        shape = g.op("Constant", value_t=torch.tensor([0, merged, -1], dtype=torch.int64))
        return g.op("Reshape", x, shape)


# Gathering only the kept taps pays off for wide layers; for narrow ones the extra slices
# cost more than the masked zeros they skip (measured on the project's CPU, small model:
# group 4 step 2.25 -> 1.90 ms, groups 0-3 slower by 0.2 ms each).
GATHER_MIN_CHANNELS = 96


class _ColumnConv(nn.Module):
    """A masked conv in skewed form: reads a (B, 2r+1, C, rows) window of its input cache,
    which holds integers on the layer's grid (scales folded as in ``_Pointwise``).

    Wide layers gather only the taps the mask keeps (row-shifted slices of the window's
    columns) and multiply once; narrow ones convolve the whole (2r+1) x k skewed kernel,
    masked zeros included (Conv1d for one tile, a batched GEMM over an im2col view for
    several). Either way the same products and sums, so the same exact integers."""

    def __init__(self, conv: MaskedConv2d, out_scale: float = 1.0):
        super().__init__()
        skewed = skew_kernel(conv)  # (Cout, Cin, k, 2r+1)
        cout, cin, k, width = skewed.shape
        grid = _grid(conv)
        fold = out_scale * (1.0 if grid is None else math.ldexp(1.0, grid.exponent))
        self.gather = cin >= GATHER_MIN_CHANNELS
        if self.gather:
            self.taps = _column_taps(conv)
            weight = torch.cat([skewed[:, :, a, col] for col, a in self.taps], dim=1)
        else:
            self.taps = []
            weight = skewed.permute(0, 3, 1, 2).reshape(cout, width * cin, k)
        self.register_buffer("weight", _scaled(weight.contiguous(), fold))
        self.register_buffer("bias", _scaled(_coded(conv)[1], out_scale))
        self.r = conv.kernel_size[0] // 2
        self.channels = conv.in_channels

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        b, _, _, rows = window.shape
        if not self.gather:
            x = (_MergeColumns.apply(window, (2 * self.r + 1) * self.channels) if _exporting()
                 else window.flatten(1, 2))
            if _exporting() or b == 1:  # one tile: Conv1d is a little faster than im2col here
                return F.conv1d(x, self.weight, self.bias, padding=self.r)
            cols = F.pad(x, (self.r, self.r)).unfold(2, rows, 1).reshape(b, -1, rows)
            return _batched(self.weight.flatten(1), self.bias, cols)
        padded = F.pad(window, (self.r, self.r))
        gathered = torch.cat([padded[:, col, :, a: a + rows] for col, a in self.taps], dim=1)
        if _exporting():
            out = torch.matmul(self.weight, gathered)
            return out if self.bias is None else out + self.bias.view(-1, 1)
        return _batched(self.weight, self.bias, gathered)


def _inverse_unit(grid: _Grid | None) -> float:
    return 1.0 if grid is None else math.ldexp(1.0, -grid.exponent)


class WavefrontStep(nn.Module):
    """One anti-diagonal of group k's diagonal context and its parameter aggregation.

    Inputs (column-major skewed layout, rows = th):
        side    (B, A, th)          the group's side projection at this anti-diagonal
        valid   (B, 1, th)          1 where (row, t - row) lies inside the tile
        y_win   (B, 2r+1, C, th)    the decoded latent's last 2r+1 columns (the current one 0)
        win_l   (B, 2r_l, C_l, th)  for each later cached layer: its input's previous columns
    Outputs:
        mean, scale (B, C, th), and for each cached layer its input at this column (B, C_l, th)

    It computes what apply_stack and ParamAggregation compute, with the exact model's
    quantizers folded: every layer's input arrives as integers on its grid (the cached columns
    too), the grid's power-of-two scale lives in the layer's weights, and each layer's output
    is pre-scaled by the next grid's 1/2^e so the next quantizer is a round and a clamp. Powers
    of two scale the exact integer sums without rounding, so the outputs are the very bits of
    the whole-tensor computation in about a third fewer operations (the step networks are
    dominated by per-operation cost). Float models have no grids and run the plain layers.
    """

    def __init__(self, spatial: SpatialContext, aggregate: ParamAggregation):
        super().__init__()
        layers = list(spatial.stack)
        # The grid that first sees the output of layers[i] (through ReLUs and residual skips).
        def consumer(i: int) -> _Grid | None:
            for layer in layers[i + 1:]:
                if isinstance(layer, MaskedResidualBlock):
                    return _grid(layer.sum_q)
                if isinstance(layer, MaskedConv2d):
                    return _grid(layer)
            return _grid(aggregate.spatial_proj)

        self.enter_first = _Requant(_grid(layers[0]), real=True)
        self.first = _ColumnConv(layers[0], _inverse_unit(consumer(0)))
        self.ops = nn.ModuleList()
        self.kinds: list[str] = []
        state: _Grid | None = None  # grid of the running value's integers; None: pre-quantized
        relu = False
        for i, layer in enumerate(layers[1:], start=1):
            if isinstance(layer, MaskedResidualBlock):
                skip = _grid(layer.sum_q)
                enter_reduce = _Requant(_grid(layer.reduce), skip)       # reduce's input
                if enter_reduce.is_identity_after(skip):  # one clamp fewer per step
                    enter_reduce = nn.Identity()
                self.ops.append(nn.ModuleList([
                    _Requant(skip, state, relu),                          # x onto the skip grid
                    enter_reduce,
                    _Pointwise(layer.reduce, _inverse_unit(_grid(layer.masked))),
                    _Requant(_grid(layer.masked), None, relu=True),      # cached column
                    _ColumnConv(layer.masked, _inverse_unit(_grid(layer.expand))),
                    _Requant(_grid(layer.expand), None, relu=True),
                    _Pointwise(layer.expand, _inverse_unit(skip)),
                    _Requant(skip),                                       # onto the skip grid
                ]))
                self.kinds.append("res")
                state, relu = skip, False
            elif isinstance(layer, MaskedConv2d):
                self.ops.append(nn.ModuleList([_Requant(_grid(layer), state, relu),
                                               _ColumnConv(layer, _inverse_unit(consumer(i)))]))
                self.kinds.append("conv")
                state, relu = None, False
            else:  # a ReLU between plain stacked convolutions
                self.ops.append(nn.Identity())
                self.kinds.append("act")
                relu = True
        proj_grid, sum_grid = _grid(aggregate.spatial_proj), _grid(aggregate.sum_q)
        self.enter_proj = _Requant(proj_grid, state, relu)
        self.spatial_proj = _Pointwise(aggregate.spatial_proj, _inverse_unit(sum_grid))
        self.enter_sum = _Requant(sum_grid)
        self.side_scale = _inverse_unit(sum_grid) if sum_grid else None
        convs = [m for m in aggregate.tail if isinstance(m, nn.Conv2d)]
        if len(convs) != 2 or len(aggregate.tail) != 4:
            raise ValueError("the step expects the aggregation tail ReLU, conv, ReLU, conv")
        mean_bits = aggregate.mean_bits
        channels = aggregate.channels
        # Means leave on the grid 2^-mean_bits: their rows are pre-scaled by 2^mean_bits.
        rows = torch.ones(2 * channels)
        if mean_bits is not None:
            rows[:channels] = math.ldexp(1.0, mean_bits)
        self.enter_tail = nn.ModuleList([_Requant(_grid(convs[0]), sum_grid, relu=True),
                                         _Requant(_grid(convs[1]), None, relu=True)])
        self.tail = nn.ModuleList([_Pointwise(convs[0], _inverse_unit(_grid(convs[1]))),
                                   _Pointwise(convs[1], rows)])
        self.mean_unit = None if mean_bits is None else math.ldexp(1.0, -mean_bits)
        self.channels = channels

    def caches(self) -> list[tuple[int, int]]:
        """(channels, radius) of each cached layer input after the first, in input order."""
        out = []
        for kind, op in zip(self.kinds, self.ops):
            if kind == "conv":
                out.append((op[1].channels, op[1].r))
            elif kind == "res":
                out.append((op[4].channels, op[4].r))
        return out

    @property
    def radius(self) -> int:
        return self.first.r

    def forward(self, side, valid, y_win, *windows):
        x = self.first(self.enter_first(y_win)) * valid
        new_columns = []
        it = iter(windows)
        for kind, op in zip(self.kinds, self.ops):
            if kind == "conv":
                enter, conv = op
                x = enter(x)
                new_columns.append(x)
                x = conv(torch.cat([next(it), x.unsqueeze(1)], dim=1)) * valid
            elif kind == "res":
                to_skip, enter_reduce, reduce, to_masked, masked, to_expand, expand, onto = op
                x = to_skip(x)
                h = to_masked(reduce(enter_reduce(x)) * valid)
                new_columns.append(h)
                m = to_expand(masked(torch.cat([next(it), h.unsqueeze(1)], dim=1)))
                x = (x + onto(expand(m))) * valid
        h = self.enter_sum(self.spatial_proj(self.enter_proj(x)))
        h = h + (side if self.side_scale is None else side * self.side_scale)
        h = self.tail[0](self.enter_tail[0](h))
        out = self.tail[1](self.enter_tail[1](h))
        mean, scale = out[:, : self.channels], out[:, self.channels:]
        if self.mean_unit is not None:
            mean = torch.round(mean) * self.mean_unit
        return (mean, scale, *new_columns)


def apply_stack(spatial: SpatialContext, y_hat: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The spatial context stack on whole tiles, re-zeroing padding positions after every
    layer so a padded edge tile equals the smaller zero-padded one."""
    anchors = None
    x = y_hat * valid
    if spatial.anchored:
        anchors = anchors_like(y_hat)
        x = x * anchors
    for layer in spatial.stack:
        if isinstance(layer, MaskedResidualBlock):
            x = layer.skip(x)
            h = torch.relu(layer.reduce(x)) * valid
            x = x + layer.skip(layer.expand(torch.relu(layer.masked(h))))
        else:
            x = layer(x)
        x = x * valid
    if anchors is not None:
        x = x * (1 - anchors)
    return x


class RecomputeStage(nn.Module):
    """(mean, scale) of a whole tile batch from its current y_hat: the spatial stack on the
    whole tile, then aggregation. The naive decoder runs it at every step."""

    def __init__(self, spatial: SpatialContext | None, aggregate: ParamAggregation):
        super().__init__()
        self.spatial = spatial
        self.aggregate = aggregate

    def forward(self, side, valid, y_hat=None):
        feats = None if self.spatial is None else apply_stack(self.spatial, y_hat, valid)
        # Padding positions are never coded; zeroing their side input keeps ``valid`` a real
        # input of the graph in every variant (an unused input would be dropped by export).
        return self.aggregate(side * valid, feats)


class TemporalStage(nn.Module):
    """Group k's temporal context features of a reference latent and, with a temporal
    prediction, that too (``gain``: the encoder gain (1, M, 1, 1) of the image being coded),
    which the runtime adds to the step's means. A separate stage so that an image coded
    alone need not run it on a whole latent of zeros (``Scheduler._zero_temporal``)."""

    def __init__(self, model: STCM, k: int):
        super().__init__()
        self.ep = model.entropy_parameters
        self.k = k

    def forward(self, reference, *gain):
        features = self.ep.temporal[self.k](reference)
        if not self.ep.cfg.temporal_prediction:
            return features
        return features, self.ep.predict(self.k, reference, gain[0])


class SideStage(nn.Module):
    """Group k's side projection: hyper prior, channel context, temporal context features."""

    def __init__(self, model: STCM, k: int):
        super().__init__()
        self.ep = model.entropy_parameters
        self.k = k

    def forward(self, hyper, *rest):
        rest = list(rest)
        y_prev = rest.pop(0) if self.k > 0 else None
        temporal = rest.pop(0) if self.ep.cfg.temporal else None
        return self.ep.side_with(self.k, hyper, y_prev, temporal)


def build_stages(model: STCM) -> dict[str, tuple[nn.Module, StageSignature]]:
    """All stages of ``model`` with their signatures (the engine's table of contents)."""
    cfg = model.cfg
    ep = model.entropy_parameters
    if not model.training:
        # Quantize every exact layer's weights now: the cached grids are then constants to
        # the tracer of the ONNX export instead of ops it would have to translate.
        for _, layer in exact_layers(model):
            layer.coded_weights()
    img = ("batch", cfg.in_channels, "height", "width")
    lat = lambda c: ("batch", c, "lat_h", "lat_w")  # noqa: E731
    stages = {
        "analysis": (model.g_a, StageSignature("analysis", (TensorSpec("x", img),),
                                               (TensorSpec("y", lat(cfg.M)),))),
        "hyper_analysis": (model.h_a, StageSignature(
            "hyper_analysis", (TensorSpec("y", lat(cfg.M)),),
            (TensorSpec("z", ("batch", cfg.N, "z_h", "z_w")),))),
        "hyper_synthesis": (model.h_s, StageSignature(
            "hyper_synthesis", (TensorSpec("z_hat", ("batch", cfg.N, "z_h", "z_w")),),
            (TensorSpec("hyper", lat(2 * cfg.M)),))),
        "synthesis": (model.g_s, StageSignature("synthesis", (TensorSpec("latent", lat(cfg.M)),),
                                                (TensorSpec("x_hat", img),))),
    }
    tile = lambda c: ("batch", c, "tile_h", "tile_w")  # noqa: E731
    for k, sl in enumerate(ep.group_slices()):
        ck = cfg.groups[k]
        hidden = ep.aggregate[k].side_proj.out_channels
        inputs = [TensorSpec("hyper", lat(2 * cfg.M))]
        if k > 0:
            inputs.append(TensorSpec("y_prev", lat(sl.start)))
        if cfg.temporal:
            inputs.append(TensorSpec("temporal", lat(2 * ck)))
            t_inputs = [TensorSpec("reference", lat(cfg.M))]
            t_outputs = [TensorSpec("temporal", lat(2 * ck))]
            if cfg.temporal_prediction:
                t_inputs.append(TensorSpec("gain", (1, cfg.M, 1, 1)))
                t_outputs.append(TensorSpec("prediction", lat(ck)))
            stages[f"temporal_{k}"] = (TemporalStage(model, k), StageSignature(
                f"temporal_{k}", tuple(t_inputs), tuple(t_outputs)))
        stages[f"side_{k}"] = (SideStage(model, k), StageSignature(
            f"side_{k}", tuple(inputs), (TensorSpec("side", lat(hidden)),)))
        spatial = ep.spatial[k] if ep.has_spatial else None
        rec_inputs = [TensorSpec("side", tile(hidden)), TensorSpec("valid", tile(1))]
        if spatial is not None:
            rec_inputs.append(TensorSpec("y_hat", tile(ck)))
        stages[f"recompute_{k}"] = (RecomputeStage(spatial, ep.aggregate[k]), StageSignature(
            f"recompute_{k}", tuple(rec_inputs),
            (TensorSpec("mean", tile(ck)), TensorSpec("scale", tile(ck)))))
        if context_variant(cfg.context).wavefront:
            step = WavefrontStep(spatial, ep.aggregate[k])
            col = lambda c: ("batch", c, "rows")  # noqa: E731
            step_inputs = [TensorSpec("side", col(hidden)), TensorSpec("valid", col(1)),
                           TensorSpec("y_window", ("batch", 2 * step.radius + 1, ck, "rows"))]
            outputs = [TensorSpec("mean", col(ck)), TensorSpec("scale", col(ck))]
            for i, (channels, r) in enumerate(step.caches()):
                step_inputs.append(TensorSpec(f"window_{i}", ("batch", 2 * r, channels, "rows")))
                outputs.append(TensorSpec(f"column_{i}", col(channels)))
            stages[f"step_{k}"] = (step, StageSignature(
                f"step_{k}", tuple(step_inputs), tuple(outputs),
                {"radius": step.radius, "caches": [list(c) for c in step.caches()]}))
    return stages
