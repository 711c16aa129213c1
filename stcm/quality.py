"""Quality: the number users pick, and the pinned gains the coder derives from it (NumPy).

``quality`` is a float in [0, 1]: 0 = the lowest trained level (smallest file), 1 = the
highest. The coder interpolates the model's pinned per-level gains with the rule of
``stcm.models.gain`` (training uses the same rule on tensors); here only NumPy, so the
runtime reads it without torch or the models package.
"""
from __future__ import annotations

import math

import numpy as np

from stcm.errors import ConfigError


def check_quality(quality) -> None:
    """Raises ConfigError unless every quality (a number, an array or a tensor) is a finite
    number in [0, 1]."""
    values = quality.detach().cpu().numpy() if hasattr(quality, "detach") else quality
    try:
        q = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"quality must be a number in [0, 1], got {quality!r}") from None
    if not np.isfinite(q).all() or (q < 0).any() or (q > 1).any():
        raise ConfigError(f"quality must be in [0, 1] (0 = smallest file, 1 = best), got {quality}")


def coding_gains(enc_levels: np.ndarray, dec_levels: np.ndarray, quality: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(encoder, decoder) gains at one quality from pinned per-level gains (L, M) float32,
    as the coder uses them: the rule of ``interpolate_gains`` in float64 (the product of two
    float32 values is exact in float64; then only correctly rounded +, *, /), cast to
    float32 -- the same bits on every machine.

    Example:
        >>> enc = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
        >>> dec = np.array([[1.0, 0.5], [1 / 3, 0.25]], np.float32)
        >>> [g.tolist() for g in coding_gains(enc, dec, 0.5)]  # products stay 1
        [[2.0, 3.0], [0.5, 0.3333333432674408]]
    """
    enc = np.asarray(enc_levels, dtype=np.float32).astype(np.float64)
    dec = np.asarray(dec_levels, dtype=np.float32).astype(np.float64)
    if enc.shape != dec.shape or enc.ndim != 2:
        raise ValueError(f"level gains must be two (L, M) arrays, got {enc.shape}, {dec.shape}")
    count = enc.shape[0]
    if count == 1:
        return enc[0].astype(np.float32), dec[0].astype(np.float32)
    pos = min(max(float(quality), 0.0), 1.0) * (count - 1)
    lo = min(int(math.floor(pos)), count - 2)
    frac = pos - lo

    def lerp(levels):
        return levels[lo] * (1.0 - frac) + levels[lo + 1] * frac

    gain_enc = lerp(enc)
    return gain_enc.astype(np.float32), (lerp(enc * dec) / gain_enc).astype(np.float32)
