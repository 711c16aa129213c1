"""Writes the format 2.4 fixtures of this folder: run once, with stcm at commit 1451f9b
(format 2.4, before format 3.0 stopped coding the latent cells over padding), never again;
``tests/runtime/test_legacy_streams.py`` checks that today's stcm still decodes them to the
same latents. 70 x 90 pixels (a 128 x 128 canvas), so that 2.4 coded cells that 3.0 would
not; the later image lies on a reference grid 3 columns off. The model is format22's.

    python tests/runtime/data/format24/make_fixtures.py
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from stcm.runtime.codec import Codec
from stcm.runtime.georeference import Georeference

HERE = Path(__file__).resolve().parent
MODEL = HERE.parent / "format22" / "model.safetensors"


def pixel_hash(pixels: np.ndarray) -> str:
    head = f"{pixels.dtype.name}{pixels.shape}".encode()
    return hashlib.sha256(head + np.ascontiguousarray(pixels).tobytes()).hexdigest()


def main():
    torch.set_num_threads(1)
    codec = Codec(MODEL, tile_size=2)
    rng = np.random.default_rng(24)
    yy, xx = np.mgrid[0:70, 0:90]
    smooth = np.sin(yy / 9.0) + np.cos(xx / 13.0)
    ms = np.stack([np.rint(3000 + 900 * smooth * (b + 1) + rng.normal(0, 50, smooth.shape))
                   for b in range(4)]).astype(np.uint16)
    utm = Georeference("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0), None)
    shifted = Georeference("EPSG:32633", (10.0, 0.0, 499970.0, 0.0, -10.0, 5000000.0), None)
    cases = {"ms16.stcm": codec.compress(ms, 0.6, georef=utm)}
    cases["ms16_later.stcm"] = codec.compress(  # a reference grid (shifted 3 columns)
        np.roll(ms, 3, axis=2), 0.6, georef=shifted, reference=cases["ms16.stcm"],
        temporal="on")
    expected = {}
    for name, data in cases.items():
        assert data[4:6] == bytes([2, 4])
        (HERE / name).write_bytes(data)
        ref = cases["ms16.stcm"] if name == "ms16_later.stcm" else None
        back = codec.decompress_image(data, ref)
        expected[name] = {"sha256": hashlib.sha256(data).hexdigest(),
                          "pixels_sha256": pixel_hash(back.pixels),
                          "reference": "ms16.stcm" if ref is not None else None}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
