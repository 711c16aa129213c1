"""The latent shift: the latent of an image moved by a few pixels, from its latent alone.

A temporal reference helps only where its latent positions cover the same ground as the
image's. Between two dates of a place the grids are often a few pixels apart (a
co-registration error; stcm finds it by phase correlation): the reference's latent can be
moved by whole positions (16 pixels) exactly, but the remainder, -8 .. 7 pixels, changes what
every position holds (the Laplacian correlation of a 10-day Sentinel-2 pair is -0.08 two
pixels off and 0.65 aligned). The decoder has only the reference's latent, not an exact
analysis transform, so the remainder is applied in latent space: per axis and remainder r a
linear map (a 5-tap convolution across positions, mixing all channels) from the latent of an
image to the latent of that image moved by r pixels, fitted here by least squares on
training images through the model's own transforms (``fit_latent_shift``). Rows first,
then columns.

The maps are integer tables (weights on the grid 2^-SHIFT_WEIGHT_BITS, int16) that the
runtime applies with exact integer arithmetic (``stcm.shift_tables.shift_latent``), so
encoder and decoder move a reference identically on any backend. They are buffers of the
model (``ModelConfig.latent_shift``), fitted, not trained: training leaves them alone.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from stcm.bands import normalize, to_band_groups
from stcm.errors import DataError
from stcm.shift_tables import (SHIFT_PHASES, SHIFT_TAPS, SHIFT_WEIGHT_BITS, check_shift_tables,
                               identity_shift_table)

FIT_QUALITIES = (0.0, 0.5, 1.0)
FIT_CROP = 256
RIDGE = 1e-3  # relative to the mean square input: keeps rarely used channels' maps small


class LatentShift(nn.Module):
    """The integer tables (``rows``, ``cols``: (SHIFT_PHASES, M, M, SHIFT_TAPS) int16) of a
    model with ``latent_shift``; phase index r + SHIFT_PHASES // 2 for a move of r pixels.
    Until fitted every phase is the identity (moves nothing)."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("rows", torch.from_numpy(identity_shift_table(channels)))
        self.register_buffer("cols", torch.from_numpy(identity_shift_table(channels)))

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        return self.rows.cpu().numpy(), self.cols.cpu().numpy()


def _latents(model, crops: torch.Tensor, quality: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(the de-gained latent rounded on the quality's step, as a reference's is; the same
    unrounded) of (B, C, H, W) crops, float64. The rounding leaves out the context model's
    means (a fit input needs the step's noise, not its exact offsets), which makes a fit
    several times cheaper than whole forwards."""
    with torch.no_grad():
        enc, dec = model.gain.gains(torch.full((len(crops),), float(quality)))
        y = model.g_a(crops) * enc
        return (torch.round(y) * dec).double(), (y * dec).double()


def fit_latent_shift(model, images: Iterable[np.ndarray], crops_per_image: int = 4,
                     seed: int = 0, on_image: Callable[[], None] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Fits the shift tables of ``model`` (an STCM in eval mode) on ``images`` ((bands, H,
    W) arrays, each at least FIT_CROP + SHIFT_PHASES pixels a side; smaller ones are
    skipped): for random crops at the qualities FIT_QUALITIES, the (unrounded) latent of the
    crop moved by r rows (columns) is regressed on a SHIFT_TAPS-tap window of the crop's
    rounded latent along the column (row). Returns (rows, cols) int16 tables; DataError when
    no image is large enough."""
    rng = np.random.default_rng(seed)
    half = SHIFT_PHASES // 2
    moves = [r for r in range(-half, half) if r]
    M = model.cfg.M
    taps = SHIFT_TAPS
    gram = {axis: torch.zeros(M * taps, M * taps, dtype=torch.float64) for axis in "rc"}
    cross = {axis: torch.zeros(len(moves), M * taps, M, dtype=torch.float64) for axis in "rc"}
    samples = 0
    for image in images:
        groups = torch.from_numpy(to_band_groups(normalize(np.asarray(image))[0]))
        H, W = groups.shape[-2:]
        for _ in range(crops_per_image if min(H, W) >= FIT_CROP + SHIFT_PHASES else 0):
            r0 = int(rng.integers(half, H - FIT_CROP - half + 1))
            c0 = int(rng.integers(half, W - FIT_CROP - half + 1))
            g = groups[int(rng.integers(len(groups)))][None]

            def crop(dr, dc, g=g, r0=r0, c0=c0):
                return g[..., r0 + dr: r0 + dr + FIT_CROP, c0 + dc: c0 + dc + FIT_CROP]

            for q in FIT_QUALITIES:
                base = _latents(model, crop(0, 0), q)[0]
                for axis, kernel in (("r", (taps, 1)), ("c", (1, taps))):
                    pad = (0, 0, taps // 2, taps // 2) if axis == "r" else (taps // 2,) * 2 + (0, 0)
                    x = F.unfold(F.pad(base, pad, mode="replicate"), kernel)[0].T  # (P, M*taps)
                    gram[axis] += x.T @ x
                    batch = torch.cat([crop(r, 0) if axis == "r" else crop(0, r) for r in moves])
                    targets = _latents(model, batch, q)[1]  # (moves, M, h, w)
                    cross[axis] += torch.einsum("pk,rmp->rkm", x, targets.flatten(2))
                samples += base[0, 0].numel()
        if on_image is not None:
            on_image()
    if not samples:
        raise DataError(f"no image is at least {FIT_CROP + SHIFT_PHASES} pixels a side: the "
                        "fit needs crops of that size")
    tables = []
    for axis in "rc":
        A = gram[axis] / samples
        A += RIDGE * A.diagonal().mean() * torch.eye(len(A), dtype=A.dtype)
        table = identity_shift_table(M)  # move 0 stays the identity
        for i, r in enumerate(moves):
            w = torch.linalg.solve(A, cross[axis][i] / samples)  # (M*taps, M_out)
            # unfold orders features channel-major: (M_in, taps) -> (M_out, M_in, taps)
            w = w.T.reshape(M, M, taps).numpy()
            q = np.rint(w * (1 << SHIFT_WEIGHT_BITS))
            if np.abs(q).max() > np.iinfo(np.int16).max:
                raise ValueError(f"a shift weight ({np.abs(w).max():.1f}) does not fit int16 "
                                 f"on the grid 2^-{SHIFT_WEIGHT_BITS}")
            table[r + half] = q.astype(np.int16)
        tables.append(table)
    rows, cols = tables
    check_shift_tables(rows, cols, M)
    return rows, cols


# Images are read through a window at most this big around their centre (the fit needs
# crops, not whole scenes).
FIT_WINDOW = 1024


def with_latent_shift(model, rows: np.ndarray, cols: np.ndarray):
    """A copy of ``model`` (frozen, exact, with the temporal branch) with ``latent_shift``
    and these tables; every other weight and its pinned coding tables as they were, so
    images code to the same streams (under another model id)."""
    import dataclasses

    from stcm.models.codec import STCM

    cfg = dataclasses.replace(model.cfg, latent_shift=True)  # validates exact + temporal
    out = STCM(cfg)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("latent_shift.")}
    missing, unexpected = out.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) == {"latent_shift.rows", "latent_shift.cols"}, missing
    out.latent_shift.rows.copy_(torch.from_numpy(rows))
    out.latent_shift.cols.copy_(torch.from_numpy(cols))
    return out.freeze(model.coding).eval()


def fit_to_checkpoint(model_path, data, out_path, crops: int = 4, seed: int = 0,
                      half: bool = False, threads: int | None = None):
    """``stcm fit-shift``: fits the tables of the checkpoint at ``model_path`` on the images
    under ``data`` and writes the checkpoint with them to ``out_path``; returns its path."""
    from tqdm import tqdm

    from stcm.errors import ConfigError
    from stcm.models.checkpoint import load_checkpoint, save_checkpoint
    from stcm.models.data import image_shape, list_images, read_image

    if threads:
        torch.set_num_threads(threads)
    model, meta = load_checkpoint(model_path)
    if not (model.cfg.temporal and model.cfg.exact):
        raise ConfigError("latent shift tables need a model with the temporal branch and the "
                          "exact entropy path")
    if not model.frozen:
        model.freeze()
    paths = list_images(data)

    def images():
        for path in paths:
            _, h, w = image_shape(path)
            hh, ww = min(h, FIT_WINDOW), min(w, FIT_WINDOW)
            yield read_image(path, ((h - hh) // 2, (w - ww) // 2, hh, ww))

    with tqdm(total=len(paths), desc="fit-shift", unit="image") as bar:
        rows, cols = fit_latent_shift(model, images(), crops, seed, on_image=bar.update)
    fitted = with_latent_shift(model, rows, cols)
    record = {"data": str(data), "images": len(paths), "crops_per_image": crops, "seed": seed,
              "qualities": list(FIT_QUALITIES), "crop": FIT_CROP}
    return save_checkpoint(fitted, out_path, {**meta, "latent_shift": record}, half=half)
