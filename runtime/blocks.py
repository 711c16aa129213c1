"""Running the transforms block by block, so whole satellite scenes fit in memory.

A 10980 x 10980 Sentinel-2 scene through g_a in one piece needs ~12 GB for the first layer's
activations alone. The analysis and synthesis transforms are therefore run on overlapping
blocks: each block carries a halo of context on every side, and only its centre is kept.
Neither transform is part of the entropy path, so blocking changes no stream's decodability;
with a halo wider than the receptive field that matters, seams are invisible (tested against
the unblocked result).
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def run_blocked(fn: Callable, x, block: int, halo: int, up: int = 1, down: int = 1):
    """Applies ``fn`` to (1, C, H, W) ``x`` (a NumPy or CuPy array) in blocks of ``block``
    with ``halo`` on each side.

    ``fn`` scales spatial sizes by up/down (g_a: down=16, g_s: up=16); ``block`` and ``halo``
    are in input units and must be multiples of ``down``. Inputs no larger than one block
    are passed through whole.
    """
    _, _, h, w = x.shape
    if h <= block and w <= block:
        return fn(x)
    if block % down or halo % down:
        raise ValueError("block and halo must be multiples of the downsampling factor")
    out = None
    for r0 in range(0, h, block):
        for c0 in range(0, w, block):
            r1, c1 = min(r0 + block, h), min(c0 + block, w)
            a0, b0 = max(r0 - halo, 0), max(c0 - halo, 0)
            a1, b1 = min(r1 + halo, h), min(c1 + halo, w)
            y = fn(x[:, :, a0:a1, b0:b1])
            if out is None:
                out = np.empty_like(y, shape=(1, y.shape[1], h * up // down, w * up // down))
            top, left = (r0 - a0) * up // down, (c0 - b0) * up // down
            rows, cols = (r1 - r0) * up // down, (c1 - c0) * up // down
            out[:, :, r0 * up // down: r1 * up // down, c0 * up // down: c1 * up // down] = \
                y[:, :, top: top + rows, left: left + cols]
    return out
