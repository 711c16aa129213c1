"""File operations: inputs are never the output, bad outputs fail before any work, damaged
inputs are refused, and array layouts are never guessed silently."""
import os

import numpy as np
import pytest
import torch

from conftest import make_smooth_image
from stcm.config import get_config
from stcm.errors import ConfigError, DataError, OutputExistsError
from stcm.models.codec import STCM
from stcm.runtime.codec import Codec
from stcm.runtime.files import compress_file, decompress_file
from stcm.runtime.imageio import Raster, read_raster, write_raster


class NoWork:
    """A codec that fails the test if it is asked to code anything."""

    def compress(self, *args, **kwargs):
        raise AssertionError("the checks should have refused before encoding")

    decompress_image = compress


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return Codec(STCM(get_config("tiny")).eval())


def _image(seed=0, h=48, w=40):
    return np.rint(make_smooth_image(np.random.default_rng(seed), 3, h, w) * 255).astype(np.uint8)


@pytest.fixture()
def png(tmp_path):
    path = tmp_path / "in.png"
    write_raster(path, Raster(_image()))
    return path


def test_the_reference_is_never_the_output(codec, png, tmp_path):
    first, later = tmp_path / "a.stcm", tmp_path / "later.stcm"
    compress_file(codec, png, first, 0.5)
    compress_file(codec, png, later, 0.5, reference=first)
    kept = first.read_bytes()
    linked = tmp_path / "hard.stcm"
    os.link(first, linked)
    symlinked = tmp_path / "sym.stcm"
    symlinked.symlink_to(first)
    for target in (first, linked, symlinked, tmp_path / "sub" / ".." / "a.stcm"):
        with pytest.raises(OutputExistsError, match="over the reference"):
            compress_file(NoWork(), png, target, 0.5, reference=first, force=True)
        with pytest.raises(OutputExistsError, match="over the reference"):
            decompress_file(NoWork(), later, target, reference=first, force=True)
    assert first.read_bytes() == kept
    with pytest.raises(DataError, match="reference .* does not exist"):
        compress_file(NoWork(), png, tmp_path / "b.stcm", reference=tmp_path / "nope.stcm")


def test_unwritable_outputs_fail_before_any_work(png, tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(OutputExistsError, match="is a folder"):
        compress_file(NoWork(), png, tmp_path / "folder", 0.5, force=True)
    (tmp_path / "plain").write_bytes(b"x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        compress_file(NoWork(), png, tmp_path / "plain" / "deeper" / "out.stcm", 0.5)
    with pytest.raises(DataError, match="is a file, not a folder"):
        decompress_file(NoWork(), png, tmp_path / "plain" / "out.tif")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(DataError, match="no permission"):
            compress_file(NoWork(), png, locked / "out.stcm", 0.5)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_truncated_png_or_jpeg_is_refused(tmp_path, suffix):
    from PIL import Image

    whole = tmp_path / f"whole{suffix}"
    pixels = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(whole)
    read_raster(whole)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated or damaged"):
        read_raster(cut)


def test_layouts_are_explicit_or_unambiguous(codec):
    chw = _image(3, 40, 24)
    hwc = np.ascontiguousarray(np.moveaxis(chw, 0, -1))  # (40, 24, 3): looks channels-last
    with pytest.raises(DataError, match="layout='hwc'"):
        codec.compress(hwc, 0.5)
    with pytest.raises(DataError, match="layout='hwc'"):
        codec.compress_series([chw, hwc], 0.5)
    assert codec.compress(hwc, 0.5, layout="hwc") == codec.compress(chw, 0.5)
    np.testing.assert_array_equal(codec.decompress(codec.compress(hwc, 0.5, layout="hwc")),
                                  codec.decompress(codec.compress(chw, 0.5)))
    # (bands, H, W) with few columns is what it says when told so.
    narrow = _image(4, 17, 4)[:1].repeat(20, axis=0)  # 20 bands of 17 x 4
    assert codec.decompress(codec.compress(narrow, 0.5, layout="chw")).shape == (20, 17, 4)
    with pytest.raises(ConfigError, match="layout"):
        codec.compress(chw, 0.5, layout="nhwc")
