"""The diagonal wavefront: one anti-diagonal per step, computing only the new anti-diagonal.

The skew (DESIGN section 3): a map F (C, h, w) is stored as S with S[:, i, i+j] = F[:, i, j],
so anti-diagonal t is column t. A masked k x k tap (di, dj) with di + dj <= 0 becomes a tap
(di, e = di + dj) of a (k, 2r+1) kernel over columns t-2r .. t (``export.stages.skew_kernel``).
Caches are kept column-major, (B, columns, C, rows), so the columns a step reads are one
contiguous slice. Each step hands the backend's ``step_k`` stage the side column, the
validity column, the last 2r+1 columns of the decoded latent and the previous 2r columns of
every later masked layer's input; the stage returns (mean, scale) of the anti-diagonal and
the new column of each cache, which the program stores. Cells outside the tile are re-zeroed
after every layer, so the result equals the zero-padded full-tensor computation.

Step t's positions are rows a..b-1 of column t, on average half the tile's rows. Every
layer reads at most R = max radius rows either side, and rows outside a..b-1 are zero
after every layer, so a step needs only rows a-R .. b+R-1 of its inputs: the stage runs on
those (``Backend.sliced_steps``; exact models), and its outputs on rows a..b-1 are the very
values of the whole column (the conv's zero padding at the slice's ends reaches only rows
that are zeroed anyway). At one tile of 64 this is 4096 + 4 * 127 computed positions a group
instead of 127 * 64.

The layout's operations (skew, unskew, the masked scatter of a step) are ``stcm.kernels``':
their NumPy specification on the CPU, their CuPy twins on a GPU.
"""
from __future__ import annotations

import numpy as np

from stcm import kernels
from stcm.contexts import VARIANTS
from stcm.runtime.steps import GroupProgram


class WavefrontProgram(GroupProgram):
    """The diagonal context of one group, decoded one anti-diagonal per step.

    Args:
        radius: the first masked layer's kernel radius r (its window is 2r+1 columns).
        caches: (channels, radius) of each later cached layer input (the step stage's order).
    """

    def __init__(self, backend, k, channels, side, valid, radius: int,
                 caches: list[tuple[int, int]], prediction=None):
        super().__init__(backend, k, VARIANTS["diag"], channels, side, valid, prediction)
        self.ops = kernels.select(backend.device)
        b, _, th, tw = side.shape
        self.tw = tw
        self.pad = 2 * max([radius] + [r for _, r in caches])
        columns = self.pad + th + tw - 1
        self.side_columns = self.ops.skew_columns(side, 0)
        self.valid_columns = self.ops.skew_columns(valid, 0)
        self.prediction_columns = (None if prediction is None
                                   else self.ops.skew_columns(prediction, 0))
        self.radius = radius
        self.y_cache = np.zeros_like(side, shape=(b, columns, channels, th))
        self.caches = [(np.zeros_like(side, shape=(b, columns, c, th)), r) for c, r in caches]
        self.stage = f"step_{k}"
        # Step t's positions are the contiguous rows of skewed column t. The stage reads
        # those and the rows within the widest layer's radius; whole columns where the
        # backend wants one shape per call, and for float models, whose sums may round
        # differently with the computation's shape (their streams have whole columns).
        self.row_slices = [slice(int(rows[0]), int(rows[-1]) + 1) for rows, _ in self.positions]
        reach = self.pad // 2
        sliced = backend.sliced_steps and backend.exact
        self.read_slices = [slice(max(0, s.start - reach), min(th, s.stop + reach))
                            if sliced else slice(0, th) for s in self.row_slices]

    def valid_at(self, t: int):
        # The step's positions are one column of the skewed layout: a slice, not a gather.
        return self.valid_columns[:, t, 0, self.row_slices[t]] > 0

    def params(self, t: int) -> tuple:
        col = self.pad + t
        read = self.read_slices[t]
        windows = [cache[:, col - 2 * r: col, :, read] for cache, r in self.caches]
        mean, scale, *columns = self.backend.run(
            self.stage, self.side_columns[:, t, :, read], self.valid_columns[:, t, :, read],
            self.y_cache[:, col - 2 * self.radius: col + 1, :, read], *windows)
        for (cache, _), column in zip(self.caches, columns):
            cache[:, col, :, read] = column
        rows = self.row_slices[t]
        own = slice(rows.start - read.start, rows.stop - read.start)
        mean = mean[:, :, own]
        if self.prediction_columns is not None:
            mean = mean + self.prediction_columns[:, t, :, rows]
        return mean, scale[:, :, own]

    def update(self, t: int, y_hat) -> None:
        rows = self.row_slices[t]
        self.ops.scatter_column(self.y_cache, self.pad + t, rows, y_hat,
                                self.valid_columns[:, t, :, rows])

    def latent(self):
        return self.ops.unskew_columns(self.y_cache, self.tw, self.pad)
