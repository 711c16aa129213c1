"""Decode throughput against the number of tiles per step call (exact models only).

    python benchmarks/batching.py [--config small] [--size 1024] [--tile-size 16]
        [--batches 1,2,4,8,16] [--repeat 3] [--json OUT]

One stream (tiles of --tile-size latent positions, so a 1024² image has 16 tiles) decoded
with each tiles-per-call setting; every setting must reproduce the same latent (checked), so
only the speed differs. Medians of --repeat, one run.
"""
from __future__ import annotations

import argparse
import json
import platform

import numpy as np
import torch

from common import median_time, sample_image
from stcm.models.codec import STCM
from stcm.config import get_config
from stcm.runtime.codec import Codec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--tile-size", type=int, default=16)
    parser.add_argument("--batches", default="1,2,4,8,16")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = STCM(get_config(args.config)).eval()
    image = sample_image(args.size)
    mp = args.size * args.size / 1e6
    data = Codec(model, tile_size=args.tile_size).compress(image, 0.75)
    reference = None
    results = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        codec = Codec(model, tile_size=args.tile_size, tile_batch=batch)
        codec.decompress(data)  # warm-up
        seconds, pixels = median_time(lambda: codec.decompress(data), args.repeat)
        reference = pixels if reference is None else reference
        assert np.array_equal(pixels, reference), "tiles per call changed the decode"
        results[batch] = {"decode_s_per_mp": seconds / mp, "mp_per_s": mp / seconds}
    per_side = -(-(args.size // 16) // args.tile_size)
    tiles = per_side * per_side
    print(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.config} (random init, exact), {args.size}x{args.size}, {tiles} tiles of "
          f"{args.tile_size}, medians of {args.repeat}")
    base = results[min(results)]["decode_s_per_mp"]
    for batch, r in results.items():
        print(f"{batch:3d} tiles/call  decode {r['decode_s_per_mp']:6.2f} s/MP  "
              f"{r['mp_per_s']:6.3f} MP/s  ({base / r['decode_s_per_mp']:.2f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.machine(), "threads": torch.get_num_threads(),
                       "config": args.config, "size": args.size, "tile_size": args.tile_size,
                       "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
