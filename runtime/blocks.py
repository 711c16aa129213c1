"""Running the transforms block by block, so whole satellite scenes fit in memory.

A 10980 x 10980 Sentinel-2 scene through g_a in one piece needs ~12 GB for the first layer's
activations alone. The analysis and synthesis transforms are therefore run on overlapping
blocks: each block carries a halo of context on every side, and only its centre is kept.
Neither transform is part of the entropy path, so blocking changes no stream's decodability;
with a halo wider than the receptive field that matters, seams are invisible (tested against
the unblocked result).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class BlockReader:
    """An input read block by block: its (H, W) and ``read(r0, r1, c0, c1)``, the (1, C,
    r1 - r0, c1 - c0) array of those rows and columns (a normalised band group read from
    a file on demand, ``runtime.scene``)."""

    shape: tuple[int, int]
    read: Callable

    @classmethod
    def of(cls, x) -> BlockReader:
        """A (1, C, H, W) array as a reader of its views."""
        return cls(tuple(x.shape[-2:]), lambda r0, r1, c0, c1: x[:, :, r0:r1, c0:c1])


def block_count(shape: tuple[int, int], block: int) -> int:
    """How many calls ``run_blocked`` makes on an input of (H, W) ``shape``."""
    h, w = shape
    if h <= block and w <= block:
        return 1
    return -(-h // block) * -(-w // block)


def run_blocked(fn: Callable, x, block: int, halo: int, up: int = 1, down: int = 1, *,
                write: Callable | None = None, on_block: Callable | None = None):
    """Applies ``fn`` to (1, C, H, W) ``x`` (a NumPy or CuPy array, or a ``BlockReader``) in
    blocks of ``block`` with ``halo`` on each side.

    ``fn`` scales spatial sizes by up/down (g_a: down=16, g_s: up=16); ``block`` and ``halo``
    are in input units and must be multiples of ``down``. Inputs no larger than one block
    are passed through whole. Each block's kept centre goes to ``write(r0, r1, c0, c1, y)``
    (output rows and columns; every output sample once, in row-major block order), or, with
    no ``write``, into one output array, returned. ``on_block()`` is called after each block.
    """
    reader = x if isinstance(x, BlockReader) else BlockReader.of(x)
    h, w = reader.shape
    out = None
    if write is None:
        def write(r0, r1, c0, c1, y):
            nonlocal out
            if out is None:
                out = np.empty_like(y, shape=(1, y.shape[1], h * up // down, w * up // down))
            out[:, :, r0:r1, c0:c1] = y
    if h <= block and w <= block:
        y = fn(reader.read(0, h, 0, w))
        write(0, y.shape[2], 0, y.shape[3], y)
        if on_block is not None:
            on_block()
        return out
    if block % down or halo % down:
        raise ValueError("block and halo must be multiples of the downsampling factor")
    for r0 in range(0, h, block):
        for c0 in range(0, w, block):
            r1, c1 = min(r0 + block, h), min(c0 + block, w)
            a0, b0 = max(r0 - halo, 0), max(c0 - halo, 0)
            a1, b1 = min(r1 + halo, h), min(c1 + halo, w)
            y = fn(reader.read(a0, a1, b0, b1))
            top, left = (r0 - a0) * up // down, (c0 - b0) * up // down
            rows, cols = (r1 - r0) * up // down, (c1 - c0) * up // down
            write(r0 * up // down, r1 * up // down, c0 * up // down, c1 * up // down,
                  y[:, :, top: top + rows, left: left + cols])
            del y  # the next block's activations need the memory
            if on_block is not None:
                on_block()
    return out
