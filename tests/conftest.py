"""Shared test fixtures: synthetic images that look like imagery, and a folder of image files."""
from __future__ import annotations

import warnings
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


#: What ``write_rich_geotiff`` puts in its file, field by field (rasterio's names).
RICH_FIELDS = dict(
    descriptions=("B2", "B3", "B4", "B8"), units=("W m-2 sr-1 um-1",) * 4,
    scales=(0.01, 0.01, 0.01, 0.02), offsets=(-0.1, 0.0, 0.0, 0.5),
    tags={"AREA_OR_POINT": "Point", "SENSOR": "S2A", "PROCESSING": "L1C"},
    band_tags=({"WAVELENGTH": "490"}, {"WAVELENGTH": "560"}, {}, {"WAVELENGTH": "842"}),
    overviews=[2, 4])


def write_rich_geotiff(path: Path, height: int = 96, width: int = 128, seed: int = 0) -> Path:
    """The issue-17 fixture: a 4-band uint16 GeoTIFF with nodata 0 (a scene-edge triangle of
    ~10 % of the pixels in every band, plus a few nodata samples in band 2 only), band names,
    dataset and band tags (AREA_OR_POINT=Point), units, scales/offsets, a colour
    interpretation and overviews."""
    from rasterio.enums import ColorInterp, Resampling

    rng = np.random.default_rng(seed)
    pixels = np.rint(300 + make_smooth_image(rng, 4, height, width) * 9000).astype(np.uint16)
    yy, xx = np.mgrid[0:height, 0:width]
    pixels[:, yy + xx < (height + width) // 4] = 0
    pixels[2, height // 2, width // 2: width // 2 + 5] = 0
    f = RICH_FIELDS
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=4,
                           dtype="uint16", crs=CRS.from_epsg(32633), nodata=0,
                           transform=Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)) as ds:
            ds.write(pixels)
            ds.descriptions = f["descriptions"]
            ds.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red,
                              ColorInterp.undefined]
            ds.units, ds.scales, ds.offsets = f["units"], f["scales"], f["offsets"]
            ds.update_tags(**f["tags"])
            for band, tags in enumerate(f["band_tags"], start=1):
                ds.update_tags(band, **tags)
        with rasterio.open(path, "r+") as ds:
            ds.build_overviews(f["overviews"], Resampling.average)
    return path


def raster_fields(path: Path) -> dict:
    """Every field of a raster file that stcm promises to keep, as rasterio reads it."""
    with rasterio.open(path) as ds:
        return dict(
            count=ds.count, dtypes=ds.dtypes, shape=ds.shape, crs=ds.crs, transform=ds.transform,
            nodata=ds.nodata, descriptions=ds.descriptions, colorinterp=ds.colorinterp,
            units=ds.units, scales=ds.scales, offsets=ds.offsets, tags=ds.tags(),
            band_tags=tuple(ds.tags(b) for b in range(1, ds.count + 1)),
            overviews=ds.overviews(1), mask_flags=ds.mask_flag_enums,
            gcps=[(p.row, p.col, p.x, p.y, p.z, p.id, p.info) for p in ds.gcps[0]],
            gcp_crs=ds.gcps[1], rpcs=ds.rpcs.to_dict() if ds.rpcs else None)


def write_gcp_rpc_image(path, gcps: bool, rpcs: bool):
    """A uint8 image georeferenced only by GCPs and/or RPCs (no geotransform)."""
    from rasterio.control import GroundControlPoint
    from rasterio.rpc import RPC

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NotGeoreferencedWarning while it has neither yet
        with rasterio.open(path, "w", driver="GTiff", width=40, height=30, count=1,
                           dtype="uint8") as ds:
            ds.write(np.arange(1200, dtype=np.uint8).reshape(1, 30, 40))
            if gcps:
                ds.gcps = ([GroundControlPoint(0, 0, 13.0, 52.0, 30.0, "1"),
                            GroundControlPoint(29, 39, 13.01, 51.99, 31.5, "2"),
                            GroundControlPoint(0, 39, 13.01, 52.0, 30.5, "3")],
                           CRS.from_epsg(4326))
            if rpcs:
                ds.rpcs = RPC(height_off=30, height_scale=500, lat_off=52, lat_scale=0.01,
                              line_off=15, line_scale=15, long_off=13, long_scale=0.01,
                              samp_off=20, samp_scale=20, err_bias=1.5, err_rand=0.25,
                              line_num_coeff=[0.01 * i for i in range(20)],
                              line_den_coeff=[1.0] + [0.001 * i for i in range(1, 20)],
                              samp_num_coeff=[-0.02 * i for i in range(20)],
                              samp_den_coeff=[1.0] + [0.0] * 19)
    return path
