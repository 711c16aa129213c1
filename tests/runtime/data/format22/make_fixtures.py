"""Writes the format 2.2 fixtures of this folder: run once, with stcm at commit ec4e2e2
(before format 2.3), never again; ``tests/runtime/test_legacy_streams.py`` checks that
today's stcm still decodes them to the same pixels.

    python tests/runtime/data/format22/make_fixtures.py
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from stcm.config import get_config
from stcm.models.checkpoint import save_checkpoint
from stcm.models.codec import STCM
from stcm.runtime.codec import Codec
from stcm.runtime.georeference import Georeference

HERE = Path(__file__).resolve().parent
# A smaller-than-tiny model (100k parameters, 0.2 MB in fp16): the streams only have to
# decode bit-identically, not compress well.
CONFIG = dict(N=12, M=16, groups=(4, 4, 8), channel_context_width=8, temporal_width=8)


def pixel_hash(pixels: np.ndarray) -> str:
    head = f"{pixels.dtype.name}{pixels.shape}".encode()
    return hashlib.sha256(head + np.ascontiguousarray(pixels).tobytes()).hexdigest()


def main():
    torch.set_num_threads(1)
    torch.manual_seed(17)
    save_checkpoint(STCM(get_config("tiny", **CONFIG)).eval(), HERE / "model.safetensors",
                    half=True)
    codec = Codec(HERE / "model.safetensors", tile_size=2)
    rng = np.random.default_rng(17)
    yy, xx = np.mgrid[0:70, 0:90]
    smooth = np.sin(yy / 9.0) + np.cos(xx / 13.0)
    rgb = np.stack([np.rint(127 + 60 * smooth + rng.normal(0, 8, smooth.shape) + 10 * b)
                    for b in range(3)]).clip(0, 255).astype(np.uint8)
    ms = np.stack([np.rint(3000 + 900 * smooth * (b + 1) + rng.normal(0, 50, smooth.shape))
                   for b in range(4)]).astype(np.uint16)
    fl = np.stack([smooth * 0.3 + b for b in range(2)]).astype(np.float32)
    utm = Georeference("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0), 0.0)
    cases = {
        "rgb8.stcm": codec.compress(rgb, 0.5),
        "ms16_georef.stcm": codec.compress(
            ms, 0.8, georef=utm, extra={"band_descriptions": ["B2", "B3", None, "B8"]}),
        "float32_nan_nodata.stcm": codec.compress(
            fl, 0.3, georef=Georeference(None, None, float("nan"))),
    }
    cases["rgb8_later.stcm"] = codec.compress(rgb[:, :, ::-1].copy(), 0.5,
                                              reference=cases["rgb8.stcm"], temporal="on")
    expected = {}
    for name, data in cases.items():
        (HERE / name).write_bytes(data)
        ref = cases["rgb8.stcm"] if name == "rgb8_later.stcm" else None
        back = codec.decompress_image(data, ref)
        expected[name] = {"sha256": hashlib.sha256(data).hexdigest(),
                          "pixels_sha256": pixel_hash(back.pixels),
                          "reference": "rgb8.stcm" if ref is not None else None}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
