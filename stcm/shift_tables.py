"""Latent shift tables: their layout, checks, and their exact application (NumPy only).

A model with ``latent_shift`` carries, per axis, one linear map per move of r = -8 .. 7
pixels (``stcm.models.latent_shift`` fits them): the latent of an image moved by r rows
(columns) from the latent of the image, a SHIFT_TAPS-tap convolution along the column (row)
that mixes all channels. A temporal reference that lies a few pixels off this image's grid
is moved by whole latent positions by a copy and by the remainder with these maps
(``shift_latent``).

Exactness: the maps are integers on the grid 2^-SHIFT_WEIGHT_BITS (int16) and the latent is
rounded onto the grid 2^-SHIFT_INPUT_BITS (and clipped to +-SHIFT_INPUT_LIMIT) before and
after each axis, so every product and every partial sum is an integer below 2^53: float64
sums are exact in any order (BLAS blocking, threads, a GPU), and encoder and decoder move
a reference to the same bits on any machine.
"""
from __future__ import annotations

import numpy as np

SHIFT_PHASES = 16  # moves -8 .. 7 pixels: the remainder after whole 16-pixel positions
SHIFT_TAPS = 5
SHIFT_WEIGHT_BITS = 12
SHIFT_INPUT_BITS = 10
SHIFT_INPUT_LIMIT = 2 ** 20 - 1  # in units of 2^-SHIFT_INPUT_BITS: |latent| < 1024
# |value| < 2^20, |weight| < 2^15, M * taps <= 2^17 terms: sums stay below 2^52.
MAX_SHIFT_CHANNELS = (1 << 17) // SHIFT_TAPS
LATENT_POSITION = 16  # pixels per latent position


def split_move(pixels: int) -> tuple[int, int]:
    """A move of ``pixels`` (an integer) as (whole latent positions, remainder in -8 .. 7).

    >>> split_move(-2), split_move(8), split_move(-8), split_move(37)
    ((0, -2), (1, -8), (0, -8), (2, 5))
    """
    whole = (int(pixels) + LATENT_POSITION // 2) // LATENT_POSITION
    return whole, int(pixels) - LATENT_POSITION * whole


def identity_shift_table(channels: int) -> np.ndarray:
    """A table whose every phase moves nothing: (SHIFT_PHASES, channels, channels,
    SHIFT_TAPS) int16, 1 on the middle tap of the diagonal (what a table holds until
    fitted, and at move 0 always)."""
    table = np.zeros((SHIFT_PHASES, channels, channels, SHIFT_TAPS), np.int16)
    eye = np.arange(channels)
    table[:, eye, eye, SHIFT_TAPS // 2] = 1 << SHIFT_WEIGHT_BITS
    return table


def check_shift_tables(rows: np.ndarray, cols: np.ndarray, channels: int) -> None:
    """ValueError unless ``rows`` and ``cols`` are int16 (SHIFT_PHASES, channels, channels,
    SHIFT_TAPS) tables."""
    shape = (SHIFT_PHASES, channels, channels, SHIFT_TAPS)
    for name, table in (("rows", rows), ("cols", cols)):
        if not isinstance(table, np.ndarray) or table.dtype != np.int16 or table.shape != shape:
            raise ValueError(f"latent shift table {name} must be int16 {shape}, got "
                             f"{getattr(table, 'dtype', type(table).__name__)} "
                             f"{getattr(table, 'shape', '')}")
    if channels > MAX_SHIFT_CHANNELS:
        raise ValueError(f"{channels} channels: exact latent shifts take at most "
                         f"{MAX_SHIFT_CHANNELS}")


def _on_grid(values: np.ndarray) -> np.ndarray:
    """float64 integers: ``values`` in units of 2^-SHIFT_INPUT_BITS, rounded, clipped."""
    return np.clip(np.rint(values), -SHIFT_INPUT_LIMIT, SHIFT_INPUT_LIMIT)


def _move_axis(units: np.ndarray, table: np.ndarray, axis: int) -> np.ndarray:
    """One axis's map (channels_out, channels_in, taps) on ``units`` (C, h, w) float64
    integers; the latent's edge is repeated beyond it."""
    half = SHIFT_TAPS // 2
    pad = [(0, 0)] * 3
    pad[axis] = (half, half)
    padded = np.pad(units, pad, mode="edge")
    length = units.shape[axis]
    out = np.zeros(units.shape, np.float64)
    channels = units.shape[0]
    for t in range(SHIFT_TAPS):
        window = np.take(padded, np.arange(t, t + length), axis=axis)
        out += (table[:, :, t].astype(np.float64) @ window.reshape(channels, -1)
                ).reshape(units.shape)
    return _on_grid(out / (1 << SHIFT_WEIGHT_BITS))


def shift_latent(latent: np.ndarray, move: tuple[int, int], rows: np.ndarray,
                 cols: np.ndarray) -> np.ndarray:
    """The latent (C, h, w) of an image moved by ``move`` = (rows, cols) pixels, each in
    -8 .. 7 (``split_move``'s remainder): position (i, j) of the result holds what the
    latent would hold for the image whose pixel (y, x) is pixel (y + rows, x + cols) of this
    one. float32 on the grid 2^-SHIFT_INPUT_BITS; the same bits on any machine."""
    latent = np.asarray(latent)
    if latent.ndim != 3:
        raise ValueError(f"expected a latent (channels, h, w), got shape {latent.shape}")
    half = SHIFT_PHASES // 2
    if not all(-half <= int(m) < half for m in move):
        raise ValueError(f"moves must be in {-half}..{half - 1} pixels, got {move}")
    check_shift_tables(rows, cols, latent.shape[0])
    units = _on_grid(latent.astype(np.float64) * (1 << SHIFT_INPUT_BITS))
    if move[0]:
        units = _move_axis(units, rows[move[0] + half], axis=1)
    if move[1]:
        units = _move_axis(units, cols[move[1] + half], axis=2)
    return (units / (1 << SHIFT_INPUT_BITS)).astype(np.float32)
