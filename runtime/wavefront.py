"""The diagonal wavefront: one anti-diagonal per step, computing only the new anti-diagonal.

The skew (docs/DESIGN section 3): a map F (C, h, w) is stored as S (C, h, h+w-1) with
S[:, i, i+j] = F[:, i, j], so anti-diagonal t is column t. A masked k x k tap (di, dj) with
di + dj <= 0 becomes a tap (di, e = di + dj) of a (k, 2r+1) kernel over columns t-2r .. t:

    K'[:, :, di + r, e + 2r] = K[:, :, di + r, e - di + r]

Each masked layer keeps a skewed cache of its input; a step convolves the last 2r+1 columns
of each cache (rows padded by r) into the next layer's column t. Pointwise layers (1x1
convolutions, ReLU, residual adds) act on the column alone. Cells outside the tile are
re-zeroed after every layer, so the result equals the zero-padded full-tensor computation.
Every step is the same static-shaped computation: exportable, batchable, capturable.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from stcm.models.context import SpatialContext
from stcm.models.entropy_parameters import ParamAggregation
from stcm.models.layers import MaskedConv2d, MaskedResidualBlock
from stcm.runtime.steps import GroupProgram


def skew_kernel(conv: MaskedConv2d) -> torch.Tensor:
    """(Cout, Cin, k, k) masked kernel -> (Cout, Cin, k, 2r+1) kernel over skewed columns."""
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


def skew(x: torch.Tensor, pad_left: int = 0) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, h, pad_left + h + w - 1) with x[..., i, j] at column pad_left+i+j."""
    b, c, h, w = x.shape
    out = x.new_zeros(b, c, h, pad_left + h + w - 1)
    for i in range(h):
        out[:, :, i, pad_left + i: pad_left + i + w] = x[:, :, i]
    return out


def unskew(s: torch.Tensor, w: int, pad_left: int = 0) -> torch.Tensor:
    """Inverse of ``skew``."""
    h = s.shape[2]
    return torch.stack([s[:, :, i, pad_left + i: pad_left + i + w] for i in range(h)], dim=2)


def _pointwise(conv: torch.nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A 1x1 Conv2d as Conv1d weights over a column (B, C, rows)."""
    bias = None if conv.bias is None else conv.bias.detach()
    return conv.weight.detach()[:, :, :, 0], bias


class _ColumnConv:
    """A masked convolution in skewed form, with its input cache in column-major layout
    (B, columns, C, rows): the 2r+1 columns a step reads are one contiguous slice, viewed as
    (B, (2r+1) C, rows) and convolved along the rows by a Conv1d (4x cheaper per call on a CPU
    than the equivalent Conv2d at these sizes)."""

    def __init__(self, conv: MaskedConv2d, batch: int, rows: int, columns: int):
        skewed = skew_kernel(conv)  # (Cout, Cin, k, 2r+1)
        cout, cin, k, width = skewed.shape
        self.weight = skewed.permute(0, 3, 1, 2).reshape(cout, width * cin, k).contiguous()
        self.bias = None if conv.bias is None else conv.bias.detach()
        self.r = k // 2
        self.cache = skewed.new_zeros(batch, columns, cin, rows)

    def __call__(self, col: int) -> torch.Tensor:
        window = self.cache[:, col - 2 * self.r: col + 1]
        return F.conv1d(window.reshape(window.shape[0], -1, window.shape[-1]), self.weight,
                        self.bias, padding=self.r)


def _columns(x: torch.Tensor, pad_left: int = 0) -> torch.Tensor:
    """(B, C, h, w) -> skewed, column-major (B, pad_left + h + w - 1, C, h)."""
    return skew(x, pad_left).permute(0, 3, 1, 2).contiguous()


class WavefrontProgram(GroupProgram):
    """The diagonal context of one group, decoded one anti-diagonal per step."""

    def __init__(self, spatial: SpatialContext, aggregate: ParamAggregation, side: torch.Tensor,
                 valid: torch.Tensor):
        super().__init__("diag", aggregate, side, valid)
        b, _, th, tw = side.shape
        self.tw = tw
        self.pad = 2 * max(layer.kernel_size[0] // 2 for layer in spatial.stack.modules()
                           if isinstance(layer, MaskedConv2d))
        columns = self.pad + th + tw - 1
        self.side = _columns(side)
        self.valid_columns = _columns(valid)
        # The program: a first masked conv reading y_hat, then residual blocks, ReLUs and
        # masked convs, each masked conv with its own skewed input cache.
        layers = list(spatial.stack)
        self.first = _ColumnConv(layers[0], b, th, columns)
        self.ops: list[tuple[str, object]] = []
        for layer in layers[1:]:
            if isinstance(layer, MaskedResidualBlock):
                self.ops.append(("res", (_pointwise(layer.reduce),
                                         _ColumnConv(layer.masked, b, th, columns),
                                         _pointwise(layer.expand))))
            elif isinstance(layer, MaskedConv2d):
                self.ops.append(("conv", _ColumnConv(layer, b, th, columns)))
            else:
                self.ops.append(("act", layer))
        self.spatial_proj = aggregate.spatial_proj.weight.detach()[:, :, :, 0]
        tail = [m for m in aggregate.tail if isinstance(m, torch.nn.Conv2d)]
        self.tail = [_pointwise(m) for m in tail]

    def _spatial_column(self, t: int, valid: torch.Tensor) -> torch.Tensor:
        col = self.pad + t
        x = self.first(col) * valid
        for kind, op in self.ops:
            if kind == "conv":
                op.cache[:, col] = x
                x = op(col) * valid
            elif kind == "res":
                (w_in, b_in), masked, (w_out, b_out) = op
                masked.cache[:, col] = torch.relu(F.conv1d(x, w_in, b_in)) * valid
                x = (x + F.conv1d(torch.relu(masked(col)), w_out, b_out)) * valid
            else:
                x = op(x) * valid
        return x

    def _rows(self, t: int) -> slice:
        return slice(self.positions[t][0][0], self.positions[t][0][-1] + 1)

    def params(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        valid = self.valid_columns[:, t]
        h = self.side[:, t] + F.conv1d(self._spatial_column(t, valid), self.spatial_proj)
        for weight, bias in self.tail:
            h = F.conv1d(torch.relu(h), weight, bias)
        rows, c = self._rows(t), self.channels
        return h[:, :c, rows], h[:, c:, rows]

    def update(self, t: int, y_hat: torch.Tensor) -> None:
        rows = self._rows(t)
        self.first.cache[:, self.pad + t, :, rows] = y_hat * self.valid_columns[:, t, :, rows]

    def latent(self) -> torch.Tensor:
        cache = self.first.cache  # (B, columns, C, h)
        h = cache.shape[-1]
        return torch.stack([cache[:, self.pad + i: self.pad + i + self.tw, :, i]
                            for i in range(h)], dim=2).permute(0, 3, 2, 1)
