"""Training data from a folder of images: listing, reading, random 3-band crops and pairs.

Images are read with rasterio, so PNG, JPEG, TIFF/GeoTIFF and JPEG 2000 all work, at any band
count and bit depth. Every crop is (3, crop, crop) float32 in [0, 1], ready for the 3-band model:
three random distinct bands of a multispectral image (paper section 3.4), 8-bit data divided
by 255, other data stretched by the crop's per-band min/max into a random sub-interval of
[0, 1] whose width is log-uniform in [0.05, 1] (at coding time min/max come from the whole
image, so a window of a 16-bit scene spans little of the range: the central 1024^2 of a
Landsat-8 L1TP scene has 99 % of its samples in 6-25 % of it), and one of the 8
flips/rotations. Images are picked with probability proportional to the square root of their
area, so one large scene does not crowd out the others. Natural photographs, which ``stcm data
fetch`` puts in a ``photo/`` sub-folder (``PHOTO_KIND``), can be given a set share of the crops
instead (``CropSampler(photo_share=...)``, ``TrainConfig.photo_share``): they add texture
diversity but are not the imagery the codec is for. NumPy only, no torch.
"""
from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from stcm.rasters import IMAGE_SUFFIXES, open_raster
from stcm.errors import DataError
from stcm.models.revisit import synthetic_revisit


# Images of at most this many values (bands * H * W) are read whole once and kept in memory;
# larger ones are read window by window (re-opened each time, which is safe after a fork).
CACHE_MAX_VALUES = 64 * 2**20
# Total memory one sampler spends on such cached images.
CACHE_MAX_BYTES = 4 * 2**30

MIN_RANGE_WIDTH = 0.05

# Name of the sub-folder that holds natural photographs (not remote-sensing imagery).
PHOTO_KIND = "photo"


def list_images(folder: str | Path) -> list[Path]:
    """Returns the image files under ``folder``, recursively, sorted.

    Suffixes are matched case-insensitively against ``IMAGE_SUFFIXES``; hidden files (names
    starting with ".", e.g. macOS "._x.tif" resource forks) are skipped.

    Raises:
        DataError: The folder does not exist or holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist or is not a folder")
    paths = sorted(p for p in folder.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                   and p.is_file())
    if not paths:
        raise DataError(f"no images in {folder}; accepted suffixes: {', '.join(IMAGE_SUFFIXES)}")
    return paths


_open = open_raster


def _layout(ds) -> tuple[list[int], bool]:
    """Returns the 1-based bands to read and whether band 1 is a palette."""
    interp = ds.colorinterp
    if ds.count == 1 and interp[0] == ColorInterp.palette:
        return [1], True
    if ds.driver != "PNG":
        # GDAL labels the 4th band of any 4-band 8-bit GeoTIFF "alpha" by default, yet in
        # remote sensing it is usually near-infrared: keep every band outside PNG.
        return list(range(1, ds.count + 1)), False
    indexes = [i + 1 for i in range(ds.count) if interp[i] != ColorInterp.alpha]
    return indexes or [1], False


def _inspect(path: Path) -> tuple[tuple[int, int, int], np.dtype]:
    with _open(path) as ds:
        indexes, palette = _layout(ds)
        if palette:
            return (3, ds.height, ds.width), np.dtype(np.uint8)
        dtype = np.result_type(*(np.dtype(ds.dtypes[i - 1]) for i in indexes))
        return (len(indexes), ds.height, ds.width), dtype


def image_shape(path: str | Path) -> tuple[int, int, int]:
    """Returns (bands, H, W) of an image without reading its pixels.

    Alpha bands of PNGs are not counted; a palette image counts as 3 bands (RGB).

    Raises:
        DataError: The file cannot be read as an image.
    """
    return _inspect(Path(path))[0]


def _read(path: Path, window: Sequence[int] | None, bands: Sequence[int] | None) -> np.ndarray:
    """Reads ``bands`` (0-based, default all) of ``window`` = (row, col, height, width)."""
    with _open(path) as ds:
        win = None
        if window is not None:
            if len(window) != 4:
                raise DataError(f"window must be (row, col, height, width), got {window!r}")
            row, col, h, w = (int(v) for v in window)
            if row < 0 or col < 0 or h < 1 or w < 1 or row + h > ds.height or col + w > ds.width:
                raise DataError(f"window {tuple(window)} is outside image {path} "
                                f"of {ds.height}x{ds.width} pixels")
            win = Window(col, row, w, h)
        indexes, palette = _layout(ds)
        if palette:
            index = ds.read(1, window=win)
            lut = np.zeros((max(ds.colormap(1)) + 1, 3), np.uint8)
            for value, rgba in ds.colormap(1).items():
                lut[value] = rgba[:3]
            data = np.moveaxis(np.take(lut, index, axis=0, mode="clip"), -1, 0)
            return data if bands is None else data[list(bands)]
        if bands is not None:
            indexes = [indexes[b] for b in bands]
        return ds.read(indexes, window=win)


def read_image(path: str | Path, window: Sequence[int] | None = None) -> np.ndarray:
    """Reads an image as (bands, H, W) in its native dtype.

    The alpha band of a PNG is dropped and palette images are expanded to RGB, so that every
    band is data. Other formats keep all their bands.

    Args:
        path: Any file rasterio reads (PNG, JPEG, TIFF/GeoTIFF, JPEG 2000, ...).
        window: Optional (row, col, height, width) to read only that part.

    Raises:
        DataError: The file cannot be read, or the window is not inside the image.
    """
    return _read(Path(path), window, None)


@dataclass
class _Raster:
    """One image file: its shape and dtype, and its pixels once cached."""

    path: Path
    shape: tuple[int, int, int]
    dtype: np.dtype
    pixels: np.ndarray | None = None

    @classmethod
    def inspect(cls, path: str | Path) -> _Raster:
        path = Path(path)
        shape, dtype = _inspect(path)
        if dtype.kind not in "uif":
            raise DataError(f"image {path} has {dtype} pixels; need integer or float values")
        return cls(path, shape, dtype)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class _Plan:
    """Every random choice behind one crop, so that a pair can share them."""

    index: int
    window: tuple[int, int, int, int]  # row, col, height, width
    bands: tuple[int, ...]
    interval: np.ndarray  # (3, 2): per-band [a, b] that the crop's min/max map to
    transform: int  # 0..7: rot90 count, plus a flip when >= 4


class _CropReader:
    """Shared machinery of the samplers: random plans, cached reads, normalisation."""

    def __init__(self, rasters: list[_Raster], crop: int, seed: int,
                 photo_share: float | None = None):
        if isinstance(crop, bool) or not isinstance(crop, (int, np.integer)) or crop < 1:
            raise DataError(f"crop must be a positive integer, got {crop!r}")
        if not rasters:
            raise DataError("no images to sample from")
        if photo_share is not None and not 0.0 <= photo_share < 1.0:
            raise DataError(f"photo_share must be in [0, 1) or None, got {photo_share}")
        self.crop = int(crop)
        self._rasters = rasters
        side = np.sqrt([r.shape[1] * r.shape[2] for r in rasters])
        photo = np.array([r.path.parent.name == PHOTO_KIND for r in rasters])
        if photo_share is not None and photo.any() and not photo.all():
            # sqrt(area) within each group; the groups themselves get 'photo_share' and the rest.
            side = np.where(photo, photo_share * side / side[photo].sum(),
                            (1.0 - photo_share) * side / side[~photo].sum())
        self._weights = side / side.sum()
        self._rng = np.random.default_rng(seed)
        self._cache_left = CACHE_MAX_BYTES

    def _gen(self, rng: np.random.Generator | None) -> np.random.Generator:
        return self._rng if rng is None else rng

    def _draw(self, rng: np.random.Generator) -> _Plan:
        index = int(rng.choice(len(self._rasters), p=self._weights))
        bands, h, w = self._rasters[index].shape
        ch, cw = min(self.crop, h), min(self.crop, w)
        row, col = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        if bands >= 3:
            chosen = tuple(int(b) for b in rng.choice(bands, 3, replace=False))
        else:
            chosen = tuple(min(b, bands - 1) for b in range(3))  # as to_band_groups pads
        width = np.exp(rng.uniform(math.log(MIN_RANGE_WIDTH), 0.0, 3))
        lo = rng.uniform(0.0, 1.0, 3) * (1.0 - width)
        interval = np.stack([lo, lo + width], axis=1)
        return _Plan(index, (row, col, ch, cw), chosen, interval, int(rng.integers(0, 8)))

    def _read(self, raster: _Raster, plan: _Plan) -> np.ndarray:
        if (raster.pixels is None and math.prod(raster.shape) <= CACHE_MAX_VALUES
                and raster.nbytes <= self._cache_left):
            raster.pixels = _read(raster.path, None, None)
            self._cache_left -= raster.nbytes
        if raster.pixels is not None:
            row, col, h, w = plan.window
            return raster.pixels[list(plan.bands), row:row + h, col:col + w]
        return _read(raster.path, plan.window, plan.bands)

    def _finish(self, raw: np.ndarray, plan: _Plan, path: Path) -> np.ndarray:
        """Normalises, pads and transforms a raw (3, h, w) crop as ``plan`` says."""
        if raw.dtype == np.uint8:
            x = raw.astype(np.float32) / np.float32(255.0)
        else:
            x = raw.astype(np.float64)
            if not np.all(np.isfinite(x)):
                raise DataError(f"image {path} holds NaN/inf values in window {plan.window}")
            lo = x.min(axis=(1, 2), keepdims=True)
            hi = x.max(axis=(1, 2), keepdims=True)
            x = (x - lo) / np.where(hi > lo, hi - lo, 1.0)
            a, b = plan.interval[:, 0, None, None], plan.interval[:, 1, None, None]
            x = (a + x * (b - a)).astype(np.float32)
        pad_h, pad_w = self.crop - x.shape[1], self.crop - x.shape[2]
        if pad_h or pad_w:
            x = np.pad(x, ((0, 0), (0, pad_h), (0, pad_w)), mode="reflect")
        x = np.rot90(x, plan.transform % 4, axes=(1, 2))
        if plan.transform >= 4:
            x = x[:, :, ::-1]
        return np.ascontiguousarray(np.clip(x, 0.0, 1.0), dtype=np.float32)

    def _crop(self, index: int, plan: _Plan) -> np.ndarray:
        raster = self._rasters[index]
        return self._finish(self._read(raster, plan), plan, raster.path)


class CropSampler(_CropReader):
    """Random (3, crop, crop) training crops from a list of image files.

    Images are picked with probability proportional to the square root of their pixel area
    (see the module doc); images smaller than ``crop`` are reflect-padded. Every method takes an optional ``rng``; without one, the
    sampler's own generator (seeded by ``seed``) is used. Results are deterministic given the
    generator's state.

    Example:
        >>> from stcm import SAMPLES_DIR
        >>> sampler = CropSampler(list_images(SAMPLES_DIR), crop=128)
        >>> x = sampler.batch(np.random.default_rng(0), 4)
        >>> x.shape, x.dtype, bool(0 <= x.min() and x.max() <= 1)
        ((4, 3, 128, 128), dtype('float32'), True)
    """

    def __init__(self, paths: Iterable[str | Path], crop: int = 256, seed: int = 0,
                 photo_share: float | None = None, unrelated_share: float = 0.0):
        """Reads the shape of every image (not its pixels).

        Args:
            photo_share: Share of the crops taken from images in a ``photo/`` folder
                (``PHOTO_KIND``), when there are both such images and others; None (or no
                photo folder) weights every image alike by sqrt(area).
            unrelated_share: Share of ``pair`` results whose current image is another,
                independent crop instead of a revisit of the reference.

        Raises:
            DataError: ``paths`` is empty, a file is unreadable, ``crop`` is not positive or
                a share is not in [0, 1).
        """
        if not 0 <= unrelated_share < 1:
            raise DataError(f"unrelated_share must be in [0, 1), got {unrelated_share}")
        super().__init__([_Raster.inspect(p) for p in paths], crop, seed, photo_share)
        self.unrelated_share = unrelated_share

    @property
    def paths(self) -> list[Path]:
        return [r.path for r in self._rasters]

    def sample(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """Returns one (3, crop, crop) float32 crop in [0, 1]."""
        plan = self._draw(self._gen(rng))
        return self._crop(plan.index, plan)

    def batch(self, rng: np.random.Generator | None = None, n: int = 1) -> np.ndarray:
        """Returns (n, 3, crop, crop) float32 crops."""
        rng = self._gen(rng)
        return np.stack([self.sample(rng) for _ in range(n)])

    def pair(self, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Returns (reference, current): a crop and its ``synthetic_revisit`` (or, for a share
        ``unrelated_share``, another independent crop).

        The reference is exactly what ``sample`` returns for the same generator state.
        """
        rng = self._gen(rng)
        reference = self.sample(rng)
        if self.unrelated_share and rng.random() < self.unrelated_share:
            return reference, self.sample(rng)
        return reference, synthetic_revisit(reference, rng)

    def pairs(self, rng: np.random.Generator | None = None,
              n: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Returns (references, currents), each (n, 3, crop, crop)."""
        rng = self._gen(rng)
        refs, curs = zip(*(self.pair(rng) for _ in range(n)))
        return np.stack(refs), np.stack(curs)


def _read_pair_list(csv_path: Path) -> list[tuple[Path, Path]]:
    """Parses ``reference,current`` rows; an optional header row of those names is skipped."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read pair list {csv_path}: {exc}") from exc
    pairs = []
    for line, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if not pairs and [c.lower() for c in cells] == ["reference", "current"]:
            continue
        if len(cells) != 2 or not all(cells):
            raise DataError(f"{csv_path} line {line}: expected 'reference,current', got {row}")
        # Relative paths are relative to the CSV, so a dataset folder can be moved whole.
        pairs.append(tuple(p if p.is_absolute() else csv_path.parent / p
                           for p in map(Path, cells)))
    if not pairs:
        raise DataError(f"pair list {csv_path} holds no 'reference,current' rows")
    return pairs


class PairSampler(_CropReader):
    """Aligned crops of real co-registered (reference, current) image pairs.

    Both crops of a pair share the window, bands and flip/rotation; for non-uint8 data each is
    stretched by its own crop min/max into the same random sub-interval of [0, 1].
    """

    def __init__(self, csv_path: str | Path, crop: int = 256, seed: int = 0):
        """Reads the pair list and the shape of every image.

        Args:
            csv_path: CSV of ``reference,current`` paths, absolute or relative to its folder.
            crop: Side of the square crops.
            seed: Seed of the generator used when a method gets no ``rng``.

        Raises:
            DataError: The CSV is unreadable or malformed, a file is unreadable, or the two
                images of a pair differ in (bands, H, W).
        """
        refs, curs = [], []
        for ref_path, cur_path in _read_pair_list(Path(csv_path)):
            ref, cur = _Raster.inspect(ref_path), _Raster.inspect(cur_path)
            if ref.shape != cur.shape:
                raise DataError(f"pair {ref.path} {ref.shape} and {cur.path} {cur.shape}: "
                                "co-registered images need the same (bands, H, W)")
            refs.append(ref)
            curs.append(cur)
        super().__init__(refs, crop, seed)
        self._currents = curs

    @property
    def paths(self) -> list[tuple[Path, Path]]:
        return [(r.path, c.path) for r, c in zip(self._rasters, self._currents)]

    def pair(self, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Returns (reference, current) aligned (3, crop, crop) float32 crops in [0, 1]."""
        plan = self._draw(self._gen(rng))
        current = self._currents[plan.index]
        return self._crop(plan.index, plan), self._finish(self._read(current, plan), plan,
                                                          current.path)

    def pairs(self, rng: np.random.Generator | None = None,
              n: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Returns (references, currents), each (n, 3, crop, crop)."""
        rng = self._gen(rng)
        refs, curs = zip(*(self.pair(rng) for _ in range(n)))
        return np.stack(refs), np.stack(curs)


def fixed_crops(paths: Iterable[str | Path], crop: int, n: int, seed: int = 0) -> np.ndarray:
    """Returns (n, 3, crop, crop) validation crops, identical on every call with equal args."""
    return CropSampler(paths, crop, seed).batch(np.random.default_rng(seed), n)


def split_by_scene(paths: Iterable[str | Path], val_fraction: float = 0.1,
                   seed: int = 0) -> tuple[list[Path], list[Path]]:
    """Splits files into (train, val) so that no scene contributes to both.

    At least one file goes to each side. With a single file both sides are that file, with a
    warning, since validation then measures fit rather than generalisation.

    Raises:
        DataError: ``paths`` is empty or ``val_fraction`` is not in (0, 1).
    """
    paths = sorted(Path(p) for p in paths)
    if not paths:
        raise DataError("no images to split into training and validation")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(paths) == 1:
        warnings.warn(f"only one image ({paths[0]}): validating on the training image",
                      stacklevel=2)
        return list(paths), list(paths)
    n_val = min(max(1, round(len(paths) * val_fraction)), len(paths) - 1)
    order = np.random.default_rng(seed).permutation(len(paths))
    val = sorted(paths[i] for i in order[:n_val])
    train = sorted(paths[i] for i in order[n_val:])
    return train, val
