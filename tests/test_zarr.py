"""stcm inside zarr: the numcodecs codec keeps a chunk's shape and dtype, round-trips its
configuration, pickles as that configuration only, and a zarr v3 array (and an xarray cube
written through Dask) stores each chunk as exactly the stream the codec writes for it.

A random tiny model keeps this fast; its pixels are poor, so the tests compare every chunk
read through zarr with the codec's own round trip of that chunk, bit for bit.
"""
from __future__ import annotations

import importlib.metadata
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

numcodecs = pytest.importorskip("numcodecs")
zarr = pytest.importorskip("zarr")

from stcm.errors import ConfigError, CorruptError, DataError, ModelMismatchError  # noqa: E402
from stcm.runtime.codec import Codec  # noqa: E402
from stcm.runtime.container import peek_header, short_id  # noqa: E402
from stcm.runtime.series import pack_series, unpack_series  # noqa: E402
from stcm.zarr import ZARR_NAME, Stcm, StcmSerializer, trim_fill  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A random tiny model saved as a checkpoint: its path."""
    import torch

    from stcm.config import get_config
    from stcm.models.checkpoint import save_checkpoint
    from stcm.models.codec import STCM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("zarr") / "tiny.safetensors"
    save_checkpoint(STCM(get_config("tiny")).eval(), path)
    return str(path)


@pytest.fixture(scope="module")
def plain(tiny) -> Codec:
    """The plain ``Codec`` of the same model, apart from the zarr codec's cached one."""
    return Codec(tiny)


def _pixels(shape, dtype, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return (rng.random(shape) * 40 - 10).astype(dtype)
    return rng.integers(100, 250, shape).astype(dtype)


def test_config_round_trips_through_json_and_the_registry(tiny):
    codec = Stcm(quality=0.3, layout="tchw", model=tiny, tile_size=8, temporal="on")
    config = json.loads(json.dumps(codec.get_config()))
    assert config["id"] == "stcm" and config["model"] == tiny
    again = numcodecs.get_codec(config)
    assert type(again) is Stcm and again == codec and again.get_config() == codec.get_config()
    assert Stcm.from_config({"quality": 0.5}) != Stcm(quality=0.6)


def test_the_entry_points_name_the_codec_and_the_serializer():
    numcodec = importlib.metadata.entry_points(group="numcodecs.codecs")["stcm"]
    serializer = importlib.metadata.entry_points(group="zarr.codecs")[ZARR_NAME]
    assert numcodec.load() is Stcm and serializer.load() is StcmSerializer
    assert numcodecs.get_codec({"id": "stcm", "quality": 0.5}).quality == 0.5


@pytest.mark.parametrize("config, match", [
    ({"model": object()}, "save_checkpoint"),
    ({"model": "a.safetensors", "engine": "engines/x"}, "not both"),
    ({"engine": 3}, "path"),
    ({"layout": "cxw"}, "layout"), ({"layout": "hhw"}, "layout"), ({"layout": "ch"}, "layout"),
    ({"quality": 1.5}, "quality"), ({"tile_size": 0}, "tile_size"),
    ({"temporal": "off"}, "temporal"),
])
def test_bad_configurations_are_refused(config, match):
    with pytest.raises(ConfigError, match=match):
        Stcm(**config)


def test_a_model_object_is_refused_even_when_it_is_a_real_model():
    from stcm.config import get_config
    from stcm.models.codec import STCM

    with pytest.raises(ConfigError, match="path"):
        Stcm(model=STCM(get_config("tiny")))


@pytest.mark.parametrize("shape, dtype, layout", [
    ((40, 50), "uint8", None), ((3, 48, 40), "uint16", None), ((2, 30, 70), "float32", None),
    ((1, 20, 24), "uint8", None), ((36, 44, 4), "int16", "hwc")])
def test_chunks_keep_their_shape_and_dtype(tiny, plain, shape, dtype, layout):
    codec = Stcm(quality=0.5, layout=layout, model=tiny)
    chunk = _pixels(shape, dtype)
    data = codec.encode(chunk)
    assert data[:4] == b"STCM"  # one ordinary container: the plain Codec reads it
    back = codec.decode(data)
    assert back.shape == chunk.shape and back.dtype == chunk.dtype
    pixels = plain.decompress(data)
    canonical = np.moveaxis(back, -1, 0) if layout == "hwc" else back.reshape(pixels.shape)
    np.testing.assert_array_equal(canonical, pixels)
    out = np.zeros_like(chunk)
    assert codec.decode(data, out=out) is out
    np.testing.assert_array_equal(out, back)


def test_a_chunk_of_the_wrong_dimensions_is_a_data_error(tiny):
    with pytest.raises(DataError, match="3-D"):
        Stcm(layout="hw", model=tiny).encode(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(DataError, match="explicit layout"):
        Stcm(model=tiny).encode(np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(CorruptError, match="bands"):  # 3 bands cannot decode as (H, W)
        Stcm(layout="hw", model=tiny).decode(
            Stcm(layout="chw", model=tiny).encode(_pixels((3, 16, 16), "uint8")))


def test_a_time_chunk_is_one_series_with_the_first_date_as_reference(tiny, plain):
    codec = Stcm(quality=0.5, layout="tchw", model=tiny, temporal="on")
    cube = _pixels((3, 3, 32, 48), "uint8")
    frame = codec.encode(cube)
    blobs = unpack_series(frame)
    assert len(blobs) == 3
    first = short_id(__import__("hashlib").sha256(blobs[0]).digest())
    assert [peek_header(b).reference_id for b in blobs] == [None, first, first]
    back = codec.decode(frame)
    assert back.shape == cube.shape and back.dtype == cube.dtype
    np.testing.assert_array_equal(back, np.stack(plain.decompress_series(blobs)))
    with pytest.raises(ModelMismatchError):  # the reference must come first
        codec.decode(pack_series([blobs[1], blobs[0], blobs[2]]))


def test_the_codec_pickles_as_its_configuration(tiny):
    codec = Stcm(quality=0.5, model=tiny)
    data = codec.encode(_pixels((3, 16, 16), "uint8"))  # loads the model in this process
    payload = pickle.dumps(codec)
    assert len(payload) < 1000 and b"torch" not in payload
    np.testing.assert_array_equal(pickle.loads(payload).decode(data), codec.decode(data))


def test_trim_fill_drops_only_trailing_fill():
    a = np.array([[[1.0, np.nan], [np.nan, np.nan]]])
    assert trim_fill(a, np.nan).shape == (1, 1, 1)
    assert trim_fill(np.zeros((2, 3, 4)), 0).shape == (1, 1, 1)
    b = np.zeros((2, 5, 6), np.uint16)
    b[1, 3, 0] = 7
    b[0, 0, 4] = 7
    assert trim_fill(b, 0).shape == (2, 4, 5)


def _open_array(path, shape, chunks, dtype, codec, fill_value=0):
    return zarr.create_array(store=str(path), shape=shape, chunks=chunks, dtype=dtype,
                             serializer=StcmSerializer(codec), compressors=None,
                             fill_value=fill_value)


def _check_chunk(codec, store_path, key, region, read_back):
    """The chunk at ``key`` is stored as the codec's stream of the in-bounds ``region``
    (zarr's fill padding of edge chunks is not coded), and zarr reads its decoded pixels."""
    stored = (store_path / "c" / "/".join(map(str, key))).read_bytes()
    assert stored == codec.encode(region)
    np.testing.assert_array_equal(read_back, codec.decode(stored))


@pytest.mark.parametrize("shape", [(3, 100, 90), (3, 40, 50)])  # edge chunks; under one chunk
def test_a_zarr_array_stores_each_chunk_as_the_codecs_stream(tiny, tmp_path, shape):
    codec = Stcm(quality=0.5, model=tiny)
    image = _pixels(shape, "uint16")
    path = tmp_path / "a.zarr"
    array = _open_array(path, shape, (3, 64, 64), "uint16", codec)
    array[:] = image
    [meta] = zarr.open_array(str(path)).metadata.to_dict()["codecs"]
    assert meta["name"] == ZARR_NAME and meta["configuration"]["layout"] == "chw"
    back = zarr.open_array(str(path), mode="r")[:]  # the serializer found by its name
    assert back.shape == image.shape and back.dtype == image.dtype
    last = ((shape[1] - 1) // 64, (shape[2] - 1) // 64)  # the corner chunk: clipped both ways
    _check_chunk(StcmSerializer.from_dict(meta).codec, path, (0, *last), image[:, last[0] * 64:, last[1] * 64:],
                 back[:, last[0] * 64:, last[1] * 64:])


def test_edge_padding_decodes_to_exactly_the_fill_value(tiny):
    import asyncio

    from zarr.core.array_spec import ArrayConfig, ArraySpec
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.dtype import parse_dtype

    spec = ArraySpec((1, 64, 64), parse_dtype("float32", zarr_format=3), float("nan"),
                     ArrayConfig.from_dict({}), default_buffer_prototype())
    chunk = np.full((1, 64, 64), np.nan, np.float32)
    chunk[0, :20, :30] = _pixels((20, 30), "float32")
    serializer = StcmSerializer(quality=0.5, layout="chw", model=tiny)
    buffer = spec.prototype.nd_buffer.from_numpy_array(chunk)
    data = asyncio.run(serializer._encode_single(buffer, spec))
    assert peek_header(data.to_bytes()).height == 20  # the padding was not coded
    back = asyncio.run(serializer._decode_single(data, spec)).as_numpy_array()
    assert np.isnan(back[0, 20:]).all() and np.isnan(back[0, :, 30:]).all()
    assert np.isfinite(back[0, :20, :30]).all()


def test_a_zarr_array_pickles_and_reads_elsewhere(tiny, tmp_path):
    codec = Stcm(quality=0.5, model=tiny)
    array = _open_array(tmp_path / "p.zarr", (2, 32, 32), (2, 32, 32), "uint8", codec)
    array[:] = _pixels((2, 32, 32), "uint8")
    payload = pickle.dumps(array)
    assert len(payload) < 4000
    np.testing.assert_array_equal(pickle.loads(payload)[:], array[:])


def test_an_xarray_multi_date_cube_round_trips_through_dask(tiny, tmp_path):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("dask")
    dates, bands, h, w = 3, 3, 96, 128
    cube = _pixels((dates, bands, h, w), "uint8", seed=3)
    ds = xr.Dataset(
        {"reflectance": (("time", "band", "y", "x"), cube)},
        coords={"time": np.array(["2024-05-01", "2024-06-01", "2024-07-01"],
                                 dtype="datetime64[ns]"),
                "band": [4, 3, 2], "y": np.arange(h) * 10.0,
                "x": np.arange(w) * 10.0})
    # one date x all bands x 64 x 64 pixels per chunk: each chunk one image
    codec = Stcm(quality=0.5, layout="tchw", model=tiny)
    ds.chunk({"time": 1, "band": 3, "y": 64, "x": 64}).to_zarr(
        tmp_path / "cube.zarr", zarr_format=3, consolidated=False,
        encoding={"reflectance": {"serializer": StcmSerializer(codec), "compressors": None}})
    back = xr.open_zarr(tmp_path / "cube.zarr", consolidated=False).load()
    assert back.reflectance.dtype == np.uint8 and back.reflectance.shape == cube.shape
    assert list(back.band.values) == [4, 3, 2]  # Sentinel-2 band numbers
    np.testing.assert_array_equal(back.time.values, ds.time.values)
    values = back.reflectance.values
    for t, r, c in ((0, 0, 0), (2, 1, 1)):  # an inner chunk and an edge chunk (rows 64..95)
        where = (slice(t, t + 1), slice(None), slice(r * 64, r * 64 + 64),
                 slice(c * 64, c * 64 + 64))
        _check_chunk(codec, tmp_path / "cube.zarr" / "reflectance", (t, 0, r, c), cube[where],
                     values[where])


BLOCKED_IMPORT = r"""
import sys
class Block:
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "torch" or name.startswith(("stcm.models", "stcm.export")):
            raise ImportError("blocked by the test: " + name)
sys.meta_path.insert(0, Block())
import stcm.zarr
codec = stcm.zarr.Stcm(engine="an/engine/dir")
assert "torch" not in sys.modules
"""


def test_the_codec_imports_without_torch_for_engines():
    out = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
