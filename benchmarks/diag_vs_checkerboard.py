"""Decode time of the diagonal context against the checkerboard context, same transforms.

    python benchmarks/diag_vs_checkerboard.py [--config small] [--size 1024] [--repeat 3]
        [--tile-size 64] [--backend torch|onnxruntime] [--json OUT]

The paper's Table 2 finds its diagonal context far slower to decode than checkerboard (one
step per anti-diagonal instead of two per group); issue 7's target is diagonal decode within
1.5x of checkerboard. Both models are the preset with random weights and the same seed, so
the transforms are identical and only the spatial context (and its decode schedule)
differs. End-to-end encode and decode of the bundled aerial sample, the two models
interleaved round by round, medians of --repeat, one run.
``--backend onnxruntime`` exports both models to engines in a temporary folder first and
decodes with those (the deployment path).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics

import torch

from common import engine_for, interleaved_times, sample_image
from stcm.models.codec import STCM
from stcm.config import get_config
from stcm.runtime.codec import Codec


CONTEXTS = ("checkerboard", "diag")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tile-size", type=int, default=64)
    parser.add_argument("--quality", type=float, default=0.75)
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    parser.add_argument("--json")
    args = parser.parse_args()
    image = sample_image(args.size)
    mp = args.size * args.size / 1e6
    codecs, streams = {}, {}
    for context in CONTEXTS:
        torch.manual_seed(0)
        model = STCM(get_config(args.config, context=context)).eval()
        if args.backend == "onnxruntime":
            codecs[context] = Codec(engine=engine_for(model), tile_size=args.tile_size)
        else:
            codecs[context] = Codec(model, tile_size=args.tile_size)
        streams[context] = codecs[context].compress(image, args.quality)  # warm-up
        codecs[context].decompress(streams[context])
    # Interleaved (one of each per round), so that drift in this VM's speed hits both alike.
    calls = {}
    for context, codec in codecs.items():
        calls[context, "encode"] = lambda codec=codec: codec.compress(image, args.quality)
        calls[context, "decode"] = lambda codec=codec, data=streams[context]: codec.decompress(data)
    measured = interleaved_times(calls, args.repeat)
    times = {context: {"encode": measured[context, "encode"],
                       "decode": measured[context, "decode"]} for context in codecs}
    results = {context: {"encode_s_per_mp": statistics.median(t["encode"]) / mp,
                         "decode_s_per_mp": statistics.median(t["decode"]) / mp,
                         "decode_s": t["decode"],
                         "steps": codecs[context].sequential_steps(*image.shape),
                         "bytes": len(streams[context])} for context, t in times.items()}
    per_round = [d / c for d, c in zip(times["diag"]["decode"], times["checkerboard"]["decode"])]
    d, c = results["diag"], results["checkerboard"]
    print(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.config} (random init, {args.backend}), {args.size}x{args.size}, tiles of {args.tile_size}, "
          f"medians of {args.repeat}")
    for name, r in results.items():
        print(f"{name:<13} {r['steps']:5d} sequential steps  encode {r['encode_s_per_mp']:6.2f} "
              f"s/MP  decode {r['decode_s_per_mp']:6.2f} s/MP")
    ratio = d["decode_s_per_mp"] / c["decode_s_per_mp"]
    print(f"diagonal decode / checkerboard decode: {ratio:.2f}x (target <= 1.5x); per round "
          f"{min(per_round):.2f}-{max(per_round):.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.machine(), "threads": torch.get_num_threads(),
                       "backend": args.backend, "config": args.config, "size": args.size, "tile_size": args.tile_size,
                       "results": results, "diag_over_checkerboard": ratio,
                       "per_round": per_round}, f, indent=1)


if __name__ == "__main__":
    main()
