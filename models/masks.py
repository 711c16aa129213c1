"""Context masks and decode orders of the spatial context variants (NumPy only).

A mask is a (k, k) array of 0/1 over kernel offsets (di, dj) = (row - k//2, col - k//2):
tap (di, dj) of the output at (i, j) reads the input at (i + di, j + dj).

Decode orders inside one channel group:
  diag          anti-diagonal t = i + j, t = 0 .. H+W-2; all positions of one t in parallel.
  checkerboard  anchors ((i + j) even) first, then non-anchors: 2 steps.
  serial        raster order, H*W steps.
  none          one step (no spatial context).
"""
from __future__ import annotations

import numpy as np


def _offsets(k: int) -> tuple[np.ndarray, np.ndarray]:
    r = k // 2
    di, dj = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1), indexing="ij")
    return di, dj


def diag_mask(k: int, strict: bool) -> np.ndarray:
    """Diagonal mask: keeps taps on earlier anti-diagonals (di + dj < 0), or also on the same
    one (di + dj <= 0) when ``strict`` is False.

    The first layer of a stack reads y_hat and must be strict; later layers read features that
    are already causal, so they may include the current anti-diagonal.

    Example:
        >>> int(diag_mask(5, strict=True).sum()), int(diag_mask(5, strict=False).sum())
        (10, 15)
    """
    di, dj = _offsets(k)
    s = di + dj
    return ((s < 0) if strict else (s <= 0)).astype(np.float32)


def checkerboard_mask(k: int) -> np.ndarray:
    """Checkerboard mask (He et al. 2021): taps at odd Manhattan offsets, i.e. the positions of
    the other colour. Applied to anchor-only input, non-anchors see their decoded anchors."""
    di, dj = _offsets(k)
    return ((di + dj) % 2 != 0).astype(np.float32)


def serial_mask(k: int) -> np.ndarray:
    """Raster (PixelCNN type A) mask: rows above, and the left part of the current row."""
    di, dj = _offsets(k)
    return ((di < 0) | ((di == 0) & (dj < 0))).astype(np.float32)


def decode_step_index(context: str, h: int, w: int) -> np.ndarray:
    """(h, w) int map: the step of the group's decode at which each position is decoded.

    Position p may depend on position q of the same group only if step[q] < step[p].
    """
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    if context == "diag":
        return i + j
    if context == "checkerboard":
        return ((i + j) % 2 != 0).astype(np.int64)
    if context == "serial":
        return i * w + j
    if context == "none":
        return np.zeros((h, w), dtype=np.int64)
    raise ValueError(f"unknown context {context!r}")


def num_decode_steps(context: str, h: int, w: int) -> int:
    """Sequential steps needed to decode one group of an (h, w) latent."""
    return int(decode_step_index(context, h, w).max()) + 1
