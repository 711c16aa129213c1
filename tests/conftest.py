"""Shared test fixtures: synthetic images that look like imagery, and a folder of image files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import Affine


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinearly resizes a (gh, gw) grid to (h, w)."""
    gh, gw = grid.shape
    rows, cols = np.linspace(0, gh - 1, h), np.linspace(0, gw - 1, w)
    tmp = np.stack([np.interp(rows, np.arange(gh), grid[:, j]) for j in range(gw)], axis=1)
    return np.stack([np.interp(cols, np.arange(gw), tmp[i]) for i in range(h)])


def make_smooth_image(rng: np.random.Generator, bands: int, h: int, w: int) -> np.ndarray:
    """Returns a (bands, h, w) float64 image in [0, 1] with the structure of real imagery.

    Smooth fields (terrain, fields), a few straight edges (roads, parcels) and a little fine
    texture, correlated across bands like real spectra, so that codecs and tests see
    something compressible rather than pure noise.
    """
    rr, cc = np.mgrid[0:h, 0:w].astype(np.float64)
    shared = _upsample(rng.uniform(0, 1, (5, 5)), h, w)
    edges = np.zeros((h, w))
    for _ in range(3):
        angle, offset = rng.uniform(0, np.pi), rng.uniform(0.2, 0.8)
        proj = (rr / h - 0.5) * np.sin(angle) + (cc / w - 0.5) * np.cos(angle)
        edges += rng.uniform(-0.3, 0.3) * (proj > offset - 0.5)
    out = np.empty((bands, h, w))
    for b in range(bands):
        own = _upsample(rng.uniform(0, 1, (4, 4)), h, w)
        texture = 0.05 * np.sin(rr * rng.uniform(0.5, 1.5) + cc * rng.uniform(0.5, 1.5))
        out[b] = 0.5 * shared + 0.3 * own + edges + texture + 0.02 * rng.standard_normal((h, w))
    out -= out.min()
    return out / out.max()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one intra-op thread for a module's tests, restored after: where many small
    ops run on a shared 2-core machine, a second OpenMP thread spin-waits more than it helps."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """A folder of small images: two 8-bit RGB PNGs, a 16-bit 5-band GeoTIFF, an 8-bit gray TIFF.

    Files: ``rgb_a.png`` (96x80), ``rgb_b.png`` (70x130), ``ms16.tif`` (5 bands, 120x100,
    uint16 in 200..9000, EPSG:32633), ``gray.tif`` (64x64); sizes are height x width.
    """
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1234)
    for name, (h, w) in (("rgb_a.png", (96, 80)), ("rgb_b.png", (70, 130))):
        rgb = np.rint(make_smooth_image(rng, 3, h, w) * 255).astype(np.uint8)
        Image.fromarray(np.moveaxis(rgb, 0, -1), "RGB").save(folder / name)
    ms = np.rint(200 + make_smooth_image(rng, 5, 120, 100) * 8800).astype(np.uint16)
    with rasterio.open(folder / "ms16.tif", "w", driver="GTiff", width=100, height=120, count=5,
                       dtype="uint16", crs=CRS.from_epsg(32633),
                       transform=Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)) as ds:
        ds.write(ms)
    gray = np.rint(make_smooth_image(rng, 1, 64, 64)[0] * 255).astype(np.uint8)
    Image.fromarray(gray, "L").save(folder / "gray.tif")
    return folder


@pytest.fixture(scope="session")
def trained_tiny(image_folder, tmp_path_factory):
    """A tiny model trained for a few dozen steps in this test session (so that its entropy
    model predicts its latents the way a real one does); returns the checkpoint path."""
    from stcm.config import get_config
    from stcm.models.train import TrainConfig, Trainer

    out = tmp_path_factory.mktemp("trained_tiny")
    cfg = TrainConfig(data=str(image_folder), out=str(out), steps=80, batch_size=4, crop=64,
                      lr=2e-3, val_every=1000, ckpt_every=1000, val_crops=2, threads=2,
                      temporal_prob=0.3)
    Trainer(get_config("tiny"), cfg, progress=False).run()
    return out / "checkpoint.safetensors"
