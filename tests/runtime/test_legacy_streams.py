"""Streams written by an older stcm (format 2.2, ``data/format22/make_fixtures.py``; format
2.3, ``data/format23/make_fixtures.py``, without symbol checksums) still decode to exactly
the pixels they decoded to then."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from stcm.runtime.codec import Codec
from stcm.runtime.container import read_container

DATA = Path(__file__).resolve().parent / "data"
FOLDERS = {"format22": 2, "format23": 3}  # folder -> the minor its files were written with
CASES = [(folder, name) for folder in FOLDERS
         for name in sorted(json.loads((DATA / folder / "expected.json").read_text()))]


def pixel_hash(pixels: np.ndarray) -> str:  # as make_fixtures.py computes it
    head = f"{pixels.dtype.name}{pixels.shape}".encode()
    return hashlib.sha256(head + np.ascontiguousarray(pixels).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def codec():
    return Codec(DATA / "format22" / "model.safetensors")


@pytest.mark.parametrize("folder,name", CASES)
def test_older_minor_streams_decode_bit_identically(codec, folder, name):
    expected = json.loads((DATA / folder / "expected.json").read_text())[name]
    data = (DATA / folder / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == expected["sha256"]
    assert data[4:6] == bytes([2, FOLDERS[folder]])
    assert read_container(data).checksums is None  # before 2.4: nothing to verify
    ref = expected["reference"]
    back = codec.decompress_image(data, (DATA / folder / ref).read_bytes() if ref else None)
    assert pixel_hash(back.pixels) == expected["pixels_sha256"]
