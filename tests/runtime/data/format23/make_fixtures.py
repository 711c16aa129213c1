"""Writes the format 2.3 fixtures of this folder: run once, with stcm at commit 43724b7
(format 2.3, before format 2.4's symbol checksums), never again;
``tests/runtime/test_legacy_streams.py`` checks that today's stcm still decodes them to the
same pixels. The model is format22's (``../format22/model.safetensors``).

    python tests/runtime/data/format23/make_fixtures.py
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
    rng = np.random.default_rng(23)
    yy, xx = np.mgrid[0:70, 0:90]
    smooth = np.sin(yy / 9.0) + np.cos(xx / 13.0)
    rgb = np.stack([np.rint(127 + 60 * smooth + rng.normal(0, 8, smooth.shape) + 10 * b)
                    for b in range(3)]).clip(1, 255).astype(np.uint8)
    rgb[:, yy + xx < 30] = 0  # a scene-edge triangle of nodata: the 2.3 mask
    utm = Georeference("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0), 0.0)
    later = np.roll(rgb, 3, axis=2)
    cases = {"rgb8_mask.stcm": codec.compress(rgb, 0.5, georef=utm)}
    shifted = Georeference("EPSG:32633", (10.0, 0.0, 499970.0, 0.0, -10.0, 5000000.0), 0.0)
    cases["rgb8_mask_later.stcm"] = codec.compress(  # a reference grid (shifted 3 columns)
        later, 0.5, georef=shifted, reference=cases["rgb8_mask.stcm"], temporal="on")
    expected = {}
    for name, data in cases.items():
        assert data[4:6] == bytes([2, 3])
        (HERE / name).write_bytes(data)
        ref = cases["rgb8_mask.stcm"] if name == "rgb8_mask_later.stcm" else None
        back = codec.decompress_image(data, ref)
        expected[name] = {"sha256": hashlib.sha256(data).hexdigest(),
                          "pixels_sha256": pixel_hash(back.pixels),
                          "reference": "rgb8_mask.stcm" if ref is not None else None}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
