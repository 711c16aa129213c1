"""Streams written by an older stcm (format 2.2, ``data/format22/make_fixtures.py``; format
2.3, ``data/format23/make_fixtures.py``, without symbol checksums; format 2.4,
``data/format24/make_fixtures.py``, which coded every latent cell, also those over padding
only) still decode to exactly the latents they decoded to then, and to pixels within one
level of those.

The latents come out of the exact integer entropy path, the same on every machine; the
pixels out of the float synthesis, which a CPU's kernels may move by a level
(docs/determinism.md): the pixel hashes in ``expected.json``, recorded on the machine that
wrote the fixtures, did not hold on another CPU for the 16-bit and float32 images, whose
latents and pixels the fixtures' own stcm reproduced there. ``data/record_decodes.py``
wrote both references with that stcm (``legacy_decodes.json``, ``legacy_decodes.npz``).
"""
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from stcm.runtime.codec import Codec
from stcm.runtime.container import read_container

DATA = Path(__file__).resolve().parent / "data"
# folder -> the minor its files were written with
FOLDERS = {"format22": 2, "format23": 3, "format24": 4}
_spec = importlib.util.spec_from_file_location("record_decodes", DATA / "record_decodes.py")
RECORD = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(RECORD)
CASES = [(folder, name) for folder in FOLDERS
         for name in sorted(json.loads((DATA / folder / "expected.json").read_text()))]


@pytest.fixture(scope="module")
def codec():
    return Codec(DATA / "format22" / "model.safetensors")


@pytest.fixture(scope="module")
def recorded():
    return (json.loads((DATA / "legacy_decodes.json").read_text()),
            dict(np.load(DATA / "legacy_decodes.npz")))


def within_one_level(pixels: np.ndarray, expected: np.ndarray) -> bool:
    """Integer samples at most one apart; float ones within 1e-4 of the image's range."""
    if pixels.dtype != expected.dtype or pixels.shape != expected.shape:
        return False
    both = np.isnan(expected)
    if not np.array_equal(np.isnan(pixels), both):
        return False
    a, b = pixels[~both].astype(np.float64), expected[~both].astype(np.float64)
    if np.issubdtype(expected.dtype, np.integer):
        return bool(np.abs(a - b).max() <= 1)
    return bool(np.abs(a - b).max() <= 1e-4 * (b.max() - b.min()))


@pytest.mark.parametrize("folder,name", CASES)
def test_older_minor_streams_decode_to_the_same_latents(codec, recorded, folder, name):
    expected = json.loads((DATA / folder / "expected.json").read_text())[name]
    data = (DATA / folder / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == expected["sha256"]
    assert data[4:6] == bytes([2, FOLDERS[folder]])
    c = read_container(data)
    assert (c.checksums is None) == (FOLDERS[folder] < 4)  # none before 2.4
    assert c.coded_box is None  # before 3.0 every latent position has its symbols
    latents_sha256, pixels = recorded
    back, latents = RECORD.decode(codec, folder, name, expected["reference"])
    assert RECORD.latent_hash(latents) == latents_sha256[f"{folder}/{name}"]
    assert within_one_level(back, pixels[f"{folder}/{name}"])
    ref = expected["reference"]  # the public API decodes the same pixels
    public = codec.decompress_image(data, (DATA / folder / ref).read_bytes() if ref else None)
    np.testing.assert_array_equal(public.pixels, back)


def test_the_level_check_refuses_a_two_level_change():
    pixels = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    assert within_one_level(pixels + 1, pixels)
    moved = pixels.copy()
    moved[1, 2, 3] += 2
    assert not within_one_level(moved, pixels)
    floats = np.linspace(0, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    assert within_one_level(floats + 5e-5, floats)
    assert not within_one_level(floats + 1e-3, floats)
