"""Exact-decode rate of streams decoded under other conditions than they were encoded in.

    python benchmarks/determinism.py [--checkpoint CKPT | --config tiny] [--crops 100]
        [--size 128] [--tile-size 4]

Encodes random crops of the bundled samples the default way (caller on 2 threads; stcm pins
its entropy path to one thread and one tile per step call) and decodes each stream (a) the
same way, (b) with the caller on 1 thread, (c) with all tiles batched into one step call
(what a GPU decoder would like to do). A stream "decodes exactly" when the decoder's latent
equals the encoder's bit for bit. (c) is refused by stcm.Codec for float models; it is
measured here to show why.
"""
from __future__ import annotations

import argparse

import torch

from common import sample_crops
from stcm.models.codec import STCM
from stcm.models.config import get_config
from stcm.runtime.codec import Codec


def _latents_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--crops", type=int, default=100)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--tile-size", type=int, default=4)
    parser.add_argument("--quality", type=float, default=0.75)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = args.checkpoint or STCM(get_config(args.config))
    codec = Codec(model, tile_size=args.tile_size)
    batched = Codec(codec.model, tile_size=args.tile_size)
    batched.scheduler.tile_batch = 1 << 20  # all tiles in one call: bypasses Codec's guard
    threads = torch.get_num_threads()
    exact = {"same settings": 0, "1 thread": 0, "all tiles batched": 0}
    crops = sample_crops(args.crops, args.size, args.seed)
    for image in crops:
        torch.set_num_threads(threads)
        data, latents = codec._compress(image, args.quality, None, None, None)
        exact["same settings"] += _latents_equal(latents, codec._decompress(data, None)[1])
        exact["all tiles batched"] += _latents_equal(latents, batched._decompress(data, None)[1])
        torch.set_num_threads(1)
        exact["1 thread"] += _latents_equal(latents, codec._decompress(data, None)[1])
    torch.set_num_threads(threads)
    print(f"model {codec.cfg.name}, {len(crops)} crops of {args.size}x{args.size}, tiles of "
          f"{args.tile_size} latent positions, encoder on {threads} threads, one tile per call")
    for name, count in exact.items():
        print(f"decoded exactly, {name:<18} {count:4d}/{len(crops)} ({100 * count / len(crops):.1f}%)")


if __name__ == "__main__":
    main()
