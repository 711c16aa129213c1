"""Streams written by an older stcm (format 2.2, ``data/format22/make_fixtures.py``) still
decode to exactly the pixels they decoded to then."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from stcm.runtime.codec import Codec

DATA = Path(__file__).resolve().parent / "data" / "format22"
EXPECTED = json.loads((DATA / "expected.json").read_text())


def pixel_hash(pixels: np.ndarray) -> str:  # as make_fixtures.py computes it
    head = f"{pixels.dtype.name}{pixels.shape}".encode()
    return hashlib.sha256(head + np.ascontiguousarray(pixels).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def codec():
    return Codec(DATA / "model.safetensors")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_format_22_streams_decode_bit_identically(codec, name):
    data = (DATA / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == EXPECTED[name]["sha256"]
    assert data[4:6] == bytes([2, 2])
    ref = EXPECTED[name]["reference"]
    back = codec.decompress_image(data, (DATA / ref).read_bytes() if ref else None)
    assert pixel_hash(back.pixels) == EXPECTED[name]["pixels_sha256"]
