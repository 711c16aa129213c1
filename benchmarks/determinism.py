"""Exact-decode rate of streams decoded under other conditions than they were encoded in.

    python benchmarks/determinism.py [--checkpoint CKPT | --config small] [--crops 1000]
        [--size 64] [--tile-size 2] [--json OUT]

Each crop (real crops of the bundled samples, and a share of random-noise crops, which push
the latent to extremes) is encoded with the torch backend the default way (caller's threads,
one tile per step call) and decoded

    same settings              torch, as encoded
    caller on 1 thread         torch, torch.set_num_threads(1)
    all tiles in one call      torch, tile_batch = every tile
    onnxruntime engine         the exported engine on onnxruntime (eager model vs engine and
                               torch vs onnxruntime at once)

and, the other way round, encoded with the engine and decoded with torch. A stream decodes
exactly when the decoder's latent equals the encoder's bit for bit. For float models
(``--float``) the codec's guards are bypassed to measure what they protect against.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from common import sample_crops
from stcm.export.onnx import export_engine
from stcm.models.checkpoint import load_checkpoint
from stcm.models.codec import STCM
from stcm.config import get_config
from stcm.runtime.codec import Codec, default_model_path


def _latents_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def _crops(n: int, size: int, seed: int, noise_share: float) -> list[np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    real = sample_crops(n, size, seed)
    return [rng.integers(0, 256, (3, size, size)).astype(np.uint8)
            if rng.random() < noise_share else crop for crop in real]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="default: the built-in default model")
    parser.add_argument("--config", help="a random-weight preset instead of a checkpoint")
    parser.add_argument("--float", action="store_true", help="the preset's float variant")
    parser.add_argument("--crops", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--tile-size", type=int, default=2)
    parser.add_argument("--quality", type=float, default=None,
                        help="fixed quality (default: uniform random per crop)")
    parser.add_argument("--noise-share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.config:
        model = STCM(get_config(args.config, exact=not args.float)).eval()
    else:
        model, _ = load_checkpoint(args.checkpoint or default_model_path())
    tmp = tempfile.TemporaryDirectory()
    export_engine(model, f"{tmp.name}/engine", progress=False)
    ts = args.tile_size
    codec = Codec(model, tile_size=ts, strict_numerics=False)
    batched = Codec(codec.model, tile_size=ts, strict_numerics=False)
    batched.scheduler.tile_batch = 1 << 20  # for float models this bypasses Codec's guard
    engine = Codec(engine=f"{tmp.name}/engine", tile_size=ts, strict_numerics=False)
    threads = torch.get_num_threads()
    exact = {"same settings": 0, "caller on 1 thread": 0, "all tiles in one call": 0,
             "onnxruntime engine": 0, "engine-encoded, torch-decoded": 0}
    crops = _crops(args.crops, args.size, args.seed, args.noise_share)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    for i, image in enumerate(crops):
        q = args.quality if args.quality is not None else float(rng.random())
        torch.set_num_threads(threads)
        data, latents = codec._compress(image, q, None, None, None)
        exact["same settings"] += _latents_equal(latents, codec._decompress(data, None)[1])
        exact["all tiles in one call"] += _latents_equal(latents,
                                                         batched._decompress(data, None)[1])
        exact["onnxruntime engine"] += _latents_equal(latents, engine._decompress(data, None)[1])
        data, latents = engine._compress(image, q, None, None, None)
        exact["engine-encoded, torch-decoded"] += _latents_equal(
            latents, codec._decompress(data, None)[1])
        torch.set_num_threads(1)
        data, latents = codec._compress(image, q, None, None, None)
        torch.set_num_threads(threads)
        exact["caller on 1 thread"] += _latents_equal(latents, codec._decompress(data, None)[1])
        if (i + 1) % 100 == 0:
            print(f"  {i + 1}/{len(crops)} crops, {time.perf_counter() - start:.0f} s", flush=True)
    torch.set_num_threads(threads)
    kind = "exact" if codec.cfg.exact else "float"
    print(f"model {codec.cfg.name} ({kind} entropy path, numerics {codec.numerics}), "
          f"{len(crops)} crops of {args.size}x{args.size} ({args.noise_share:.0%} noise), "
          f"tiles of {ts} latent positions, torch encoder on {threads} threads")
    for name, count in exact.items():
        print(f"decoded exactly, {name:<30} {count:5d}/{len(crops)} "
              f"({100 * count / len(crops):.1f}%)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": codec.cfg.name, "exact_model": codec.cfg.exact,
                       "crops": len(crops), "size": args.size, "tile_size": ts,
                       "threads": threads, "exact_decodes": exact}, f, indent=1)


if __name__ == "__main__":
    main()
