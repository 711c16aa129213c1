"""A large multispectral scene end to end: time per megapixel and peak memory.

    python benchmarks/large_scene.py [--size 4096] [--bands 4] [--quality 0.75] [--json OUT]

The bundled Sentinel-2 sample (uint16) mirrored out to --size x --size with --bands bands,
coded with the built-in model on the torch backend (all tiles of a group in one step call:
16 tiles of 64 at 4096^2). Reports encode and decode time, s/MP per 3-band group, bpp, exact
round trip of the latents, and the process's peak resident memory.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np
import torch

from stcm import SAMPLES_DIR
from stcm.runtime.codec import Codec
from stcm.runtime.imageio import read_raster


def scene(size: int, bands: int) -> np.ndarray:
    pixels = read_raster(SAMPLES_DIR / "sentinel2_b234_8_uint16.tif").pixels
    pixels = pixels[np.arange(bands) % pixels.shape[0]]
    block = np.concatenate([pixels, pixels[:, ::-1]], axis=1)
    block = np.concatenate([block, block[:, :, ::-1]], axis=2)
    reps = (1, -(-size // block.shape[1]), -(-size // block.shape[2]))
    return np.ascontiguousarray(np.tile(block, reps)[:, :size, :size])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--quality", type=float, default=0.75)
    parser.add_argument("--json")
    args = parser.parse_args()
    image = scene(args.size, args.bands)
    codec = Codec()
    start = time.perf_counter()
    data = codec.compress(image, args.quality)
    encode = time.perf_counter() - start
    start = time.perf_counter()
    decoded = codec.decompress(data)
    decode = time.perf_counter() - start
    groups = -(-args.bands // 3)
    mp = args.size ** 2 / 1e6
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux
    bpp = 8 * len(data) / args.size ** 2
    print(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.bands}-band {image.dtype} {args.size}x{args.size} ({groups} band groups), "
          f"quality {args.quality}")
    print(f"encode {encode:.1f} s ({encode / mp / groups:.2f} s/MP per group), decode "
          f"{decode:.1f} s ({decode / mp / groups:.2f} s/MP per group), {bpp:.3f} bpp, "
          f"shape kept: {decoded.shape == image.shape}, peak memory {peak_gb:.1f} GB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.machine(), "size": args.size, "bands": args.bands,
                       "quality": args.quality, "encode_s": encode, "decode_s": decode,
                       "bpp": bpp, "peak_rss_gb": peak_gb}, f, indent=1)


if __name__ == "__main__":
    main()
