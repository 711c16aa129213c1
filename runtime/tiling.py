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
        return [self.box(t) for t in range(self.count)]

    def box(self, tile: int) -> tuple[int, int, int, int]:
        """(row0, col0, rows, cols) of tile ``tile``'s real extent (raster order index)."""
        th, tw = self.frame
        r, c = divmod(tile, self.shape[1])
        return r * th, c * tw, min(th, self.height - r * th), min(tw, self.width - c * tw)

    def touching(self, box: tuple[int, int, int, int]) -> tuple[int, ...]:
        """Indexes, in raster order, of the tiles that intersect ``box`` (row0, col0, rows,
        cols) of the latent."""
        r0, c0, h, w = box
        th, tw = self.frame
        rows, cols = self.shape
        return tuple(r * cols + c for r in range(r0 // th, min(-(-(r0 + h) // th), rows))
                     for c in range(c0 // tw, min(-(-(c0 + w) // tw), cols)))

    def cover(self, tiles) -> tuple[int, int, int, int]:
        """The smallest box (row0, col0, rows, cols) that holds every tile of ``tiles``."""
        boxes = self._selected(tiles)
        r0, c0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        return (r0, c0, max(b[0] + b[2] for b in boxes) - r0,
                max(b[1] + b[3] for b in boxes) - c0)

    def valid(self, xp=np, tiles=None, inside: tuple[int, int, int, int] | None = None):
        """(T, 1, th, tw) float32 mask of each tile's real positions (an ``xp`` array), of
        every tile or of ``tiles`` (indexes) in their order; with ``inside`` (row0, col0,
        rows, cols of the latent), only those in that box."""
        th, tw = self.frame
        boxes = self._selected(tiles)
        mask = xp.zeros((len(boxes), 1, th, tw), xp.float32)
        for t, box in enumerate(boxes):
            a, b, h, w = box if inside is None else intersect(box, inside)
            a, b = a - box[0], b - box[1]  # in the tile's frame
            mask[t, :, a: a + h, b: b + w] = 1
        return mask

    def split(self, x, tiles=None, origin: tuple[int, int] = (0, 0)):
        """(1, C, h, w) -> (T, C, th, tw), zero-padded (NumPy or CuPy, as ``x``): every tile,
        or ``tiles`` of a crop of the latent whose first position is ``origin``."""
        th, tw = self.frame
        boxes = self._selected(tiles)
        out = _zeros_like(x, (len(boxes), x.shape[1], th, tw))
        for t, (r, c, h, w) in enumerate(boxes):
            r, c = r - origin[0], c - origin[1]
            out[t, :, :h, :w] = x[0, :, r: r + h, c: c + w]
        return out

    def merge(self, tiles_data, tiles=None, origin: tuple[int, int] = (0, 0),
              shape: tuple[int, int] | None = None):
        """(T, C, th, tw) -> (1, C, h, w), dropping the padding; the inverse of ``split``
        (``shape``: the crop's, zeros where no tile of ``tiles`` lies)."""
        h_out, w_out = shape or (self.height, self.width)
        out = _zeros_like(tiles_data, (1, tiles_data.shape[1], h_out, w_out))
        self.paste(out, tiles_data, tiles, origin)
        return out

    def paste(self, out, tiles_data, tiles=None, origin: tuple[int, int] = (0, 0)) -> None:
        """Writes (T, C, th, tw) ``tiles_data`` into ``out`` (1, C, h, w; a crop of the
        latent whose first position is ``origin``), dropping the padding: ``merge`` into an
        existing array, e.g. a view of some channels of a larger one."""
        for t, (r, c, h, w) in enumerate(self._selected(tiles)):
            r, c = r - origin[0], c - origin[1]
            out[0, :, r: r + h, c: c + w] = tiles_data[t, :, :h, :w]

    def _selected(self, tiles) -> list[tuple[int, int, int, int]]:
        # One tile's box is O(1): a chunk of a large grid must not list the whole grid.
        return self.boxes() if tiles is None else [self.box(t) for t in tiles]


def intersect(box, other) -> tuple[int, int, int, int]:
    """The part of ``box`` (row0, col0, rows, cols) inside ``other``; rows or cols 0 when
    they do not overlap."""
    r, c = max(box[0], other[0]), max(box[1], other[1])
    return (r, c, max(min(box[0] + box[2], other[0] + other[2]) - r, 0),
            max(min(box[1] + box[3], other[1] + other[3]) - c, 0))


def _zeros_like(a, shape):
    """Zeros of ``shape`` in ``a``'s dtype and array library (NumPy or CuPy)."""
    return np.zeros_like(a, shape=shape)  # NEP 18: CuPy arrays dispatch to CuPy
