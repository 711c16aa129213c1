"""Decode time of the wavefront engine vs the naive diagonal decoder, same model and image.

    python benchmarks/wavefront_vs_naive.py [--config small] [--checkpoint CKPT] [--size 512]
        [--repeat 3] [--tile-size 64] [--backend torch|onnxruntime] [--json OUT]

The naive decoder recomputes the whole masked context stack on the whole tile at every
anti-diagonal step; the wavefront computes only the new anti-diagonal from per-layer caches.
Both decode the same stream (exact models: the two compute the same integers, so the
reconstructions must be identical; a float model, --float, makes each decode its own
encoder's stream). Each figure is the median of --repeat runs. ``--backend onnxruntime``
exports the model to an engine in a temporary folder and runs both decoders on it (the naive
decoder's ``recompute_k`` stages are part of every engine).
"""
from __future__ import annotations

import argparse
import json
import platform

import numpy as np
import torch

from common import engine_for, median_time, sample_image
from stcm.models.codec import STCM
from stcm.config import get_config
from stcm.runtime.codec import Codec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--checkpoint", help="use trained weights instead of a random init")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tile-size", type=int, default=64)
    parser.add_argument("--quality", type=float, default=0.75)
    parser.add_argument("--float", action="store_true", help="a float model (random init)")
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = args.checkpoint or STCM(get_config(args.config, context="diag",
                                               exact=not args.float))
    if args.backend == "onnxruntime":
        engine = engine_for(model)
        fast = Codec(engine=engine, tile_size=args.tile_size)
        naive = Codec(engine=engine, tile_size=args.tile_size, naive=True)
    else:
        fast = Codec(model, tile_size=args.tile_size)
        naive = Codec(fast.model, tile_size=args.tile_size, naive=True)
    image = sample_image(args.size)
    mp = args.size * args.size / 1e6
    encode, data = median_time(lambda: fast.compress(image, args.quality), args.repeat)
    t_fast, out_fast = median_time(lambda: fast.decompress(data), args.repeat)
    naive_data = data if fast.cfg.exact else naive.compress(image, args.quality)
    t_naive, out_naive = median_time(lambda: naive.decompress(naive_data), max(1, args.repeat // 2))
    diff = int(np.abs(out_fast.astype(int) - out_naive.astype(int)).max())
    if fast.cfg.exact:
        assert diff == 0, "exact model: naive and wavefront must decode identically"
    steps = fast.sequential_steps(*image.shape)
    print(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"model {fast.cfg.name} ({'trained' if args.checkpoint else 'random init'}, "
          f"{args.backend}), "
          f"{args.size}x{args.size}, tile {args.tile_size}, {steps} sequential steps")
    print(f"stream: {len(data):,} bytes, {8 * len(data) / (args.size ** 2):.3f} bpp")
    print(f"encode (wavefront)   {encode:8.3f} s  {encode / mp:7.3f} s/MP")
    print(f"decode wavefront     {t_fast:8.3f} s  {t_fast / mp:7.3f} s/MP")
    print(f"decode naive         {t_naive:8.3f} s  {t_naive / mp:7.3f} s/MP")
    print(f"speed-up             {t_naive / t_fast:8.2f} x   (max pixel difference of the two "
          f"reconstructions: {diff})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.machine(), "threads": torch.get_num_threads(),
                       "backend": args.backend, "config": fast.cfg.name, "size": args.size, "tile_size": args.tile_size,
                       "encode_s": encode, "decode_wavefront_s": t_fast,
                       "decode_naive_s": t_naive, "speedup": t_naive / t_fast,
                       "max_pixel_difference": diff, "bytes": len(data)}, f, indent=2)


if __name__ == "__main__":
    main()
