"""The spatial context variants, each defined once: its masks, its decode order, and how the
runtime decodes it (NumPy only; models/, export/ and runtime/ compose these definitions).

A mask is a (k, k) array of 0/1 over kernel offsets (di, dj) = (row - k//2, col - k//2):
tap (di, dj) of the output at (i, j) reads the input at (i + di, j + dj).

Decode orders inside one channel group:
  diag          anti-diagonal t = i + j, t = 0 .. H+W-2; all positions of one t in parallel
                (the paper's stacked diagonal module; the runtime's wavefront).
  checkerboard  anchors ((i + j) even) first, then non-anchors: 2 steps.
  serial        raster order, H*W steps.
  none          one step (no spatial context).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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


@dataclass(frozen=True)
class ContextVariant:
    """Everything that differs between spatial context variants.

    Attributes:
        name: the ``ModelConfig.context`` value.
        steps: (i, j, h, w) -> the decode step of each position (i, j) of an (h, w) group;
            position p may depend on position q of the same group only if step[q] < step[p].
        first_mask: k -> mask of the stack's first layer (reads y_hat: strictly causal);
            None: the variant has no spatial context.
        later_mask: k -> mask of later layers and residual blocks (read causal features);
            None: a single-layer stack.
        anchored: the stack reads anchor positions only and writes non-anchors only
            (checkerboard).
        wavefront: decoded one anti-diagonal per step by ``step_k`` stages (the runtime's
            wavefront program); otherwise by ``recompute_k`` on whole tiles.
    """

    name: str
    steps: Callable[[np.ndarray, np.ndarray, int, int], np.ndarray]
    first_mask: Callable[[int], np.ndarray] | None
    later_mask: Callable[[int], np.ndarray] | None
    anchored: bool = False
    wavefront: bool = False

    @property
    def spatial(self) -> bool:
        """Whether the variant reads the group's own decoded positions."""
        return self.first_mask is not None

    @property
    def stacked(self) -> bool:
        """Whether the stack may have more than one layer."""
        return self.later_mask is not None

    def step_index(self, h: int, w: int) -> np.ndarray:
        """(h, w) int map: the step of the group's decode at which each position is decoded."""
        i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        return np.broadcast_to(self.steps(i, j, h, w), (h, w)).astype(np.int64)

    def num_steps(self, h: int, w: int) -> int:
        """Sequential steps needed to decode one group of an (h, w) latent."""
        return int(self.step_index(h, w).max()) + 1


VARIANTS = {v.name: v for v in (
    ContextVariant("diag", lambda i, j, h, w: i + j, lambda k: diag_mask(k, True),
                   lambda k: diag_mask(k, False), wavefront=True),
    ContextVariant("checkerboard", lambda i, j, h, w: (i + j) % 2, checkerboard_mask,
                   checkerboard_mask, anchored=True),
    ContextVariant("serial", lambda i, j, h, w: i * w + j, serial_mask, None),
    ContextVariant("none", lambda i, j, h, w: 0 * i, None, None),
)}
CONTEXTS = tuple(VARIANTS)


def context_variant(name: str) -> ContextVariant:
    """The variant called ``name``; ValueError for an unknown one (configs check first)."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown context {name!r}; one of {CONTEXTS}") from None


def decode_step_index(context: str, h: int, w: int) -> np.ndarray:
    """(h, w) int map of the decode step of each position (``ContextVariant.step_index``)."""
    return context_variant(context).step_index(h, w)


def num_decode_steps(context: str, h: int, w: int) -> int:
    """Sequential steps needed to decode one group of an (h, w) latent."""
    return context_variant(context).num_steps(h, w)
