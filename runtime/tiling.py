"""Latent tiles: the grid, and splitting/merging latents into equally shaped tile batches.

Every tile has the same frame shape (th, tw) = (min(size, h), min(size, w)), so all tiles of
a latent form one (T, C, th, tw) batch; edge tiles smaller than the frame are zero-padded and
carry a validity mask. Padding positions are never coded and read as zeros, so a padded edge
tile computes exactly what the smaller tile would with zero padding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stcm.errors import ConfigError


@dataclass(frozen=True)
class TileGrid:
    """Tiling of an (h, w) latent into tiles of at most ``size`` x ``size`` positions."""

    height: int
    width: int
    size: int

    def __post_init__(self):
        if self.size < 1 or self.height < 1 or self.width < 1:
            raise ConfigError(f"invalid tiling {self.height}x{self.width} by {self.size}")

    @property
    def frame(self) -> tuple[int, int]:
        return min(self.size, self.height), min(self.size, self.width)

    @property
    def shape(self) -> tuple[int, int]:
        """Tiles down and across."""
        th, tw = self.frame
        return -(-self.height // th), -(-self.width // tw)

    @property
    def count(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """(row0, col0, rows, cols) of each tile's real extent, in raster order of tiles."""
        th, tw = self.frame
        rows, cols = self.shape
        return [(r * th, c * tw, min(th, self.height - r * th), min(tw, self.width - c * tw))
                for r in range(rows) for c in range(cols)]

    def valid(self, xp=np):
        """(T, 1, th, tw) float32 mask of each tile's real positions (an ``xp`` array)."""
        th, tw = self.frame
        mask = xp.zeros((self.count, 1, th, tw), xp.float32)
        for t, (_, _, h, w) in enumerate(self.boxes()):
            mask[t, :, :h, :w] = 1
        return mask

    def split(self, x):
        """(1, C, h, w) -> (T, C, th, tw), zero-padded (NumPy or CuPy, as ``x``)."""
        th, tw = self.frame
        out = _zeros_like(x, (self.count, x.shape[1], th, tw))
        for t, (r, c, h, w) in enumerate(self.boxes()):
            out[t, :, :h, :w] = x[0, :, r: r + h, c: c + w]
        return out

    def merge(self, tiles):
        """(T, C, th, tw) -> (1, C, h, w), dropping the padding."""
        out = _zeros_like(tiles, (1, tiles.shape[1], self.height, self.width))
        for t, (r, c, h, w) in enumerate(self.boxes()):
            out[0, :, r: r + h, c: c + w] = tiles[t, :, :h, :w]
        return out


def _zeros_like(a, shape):
    """Zeros of ``shape`` in ``a``'s dtype and array library (NumPy or CuPy)."""
    return np.zeros_like(a, shape=shape)  # NEP 18: CuPy arrays dispatch to CuPy
