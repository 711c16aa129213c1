"""Speed of the exact (integer) entropy path against the float one, same architecture.

    python benchmarks/exact_cost.py [--config small] [--size 512] [--repeat 3] [--json OUT]

Both models are the same preset with the same random weights (the exact one quantizes them);
timings are end-to-end encode and decode of the bundled aerial sample, medians of repeats, in
one run. The float path must run its entropy stages on one thread with one tile per call to
stay decodable (docs/determinism.md); the exact path is measured that way too (the cost of
the integer arithmetic alone), and then as it may run: the caller's threads, and several
tiles per step call (its default).
"""
from __future__ import annotations

import argparse
import json

import torch

from common import median_time, sample_image
from stcm.models.codec import STCM
from stcm.config import get_config
from stcm.runtime.codec import Codec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--tile-size", type=int, default=16)
    parser.add_argument("--tile-batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.manual_seed(0)
    float_model = STCM(get_config(args.config, exact=False)).eval()
    exact_model = STCM(get_config(args.config)).eval()
    exact_model.load_state_dict(float_model.state_dict(), strict=False)
    image = sample_image(args.size)
    mp = args.size * args.size / 1e6
    threads = torch.get_num_threads()
    # (codec, entropy path pinned to one thread like the float path)
    runs = {
        "float (1 thread, 1 tile/call)": (Codec(float_model, tile_size=args.tile_size), True),
        "exact (1 thread, 1 tile/call)": (
            Codec(exact_model, tile_size=args.tile_size, tile_batch=1), True),
        f"exact ({threads} threads, 1 tile/call)": (
            Codec(exact_model, tile_size=args.tile_size, tile_batch=1), False),
        f"exact ({threads} threads, {args.tile_batch} tiles/call)": (
            Codec(exact_model, tile_size=args.tile_size, tile_batch=args.tile_batch), False),
    }
    results = {}
    base = None
    print(f"{args.config}, {args.size}x{args.size}, tiles of {args.tile_size}, caller on "
          f"{threads} threads (transforms), medians of {args.repeat}")
    for name, (codec, pin) in runs.items():
        codec.backend.pin_entropy = pin  # the float path's rule, or the exact one's default
        codec.compress(image, 0.75)  # warm-up
        enc, data = median_time(lambda: codec.compress(image, 0.75), args.repeat)
        dec, _ = median_time(lambda: codec.decompress(data), args.repeat)
        results[name] = {"encode_s_per_mp": enc / mp, "decode_s_per_mp": dec / mp}
        base = base or results[name]
        print(f"{name:<36} encode {enc / mp:6.2f} s/MP ({base['encode_s_per_mp'] * mp / enc:4.2f}x)"
              f"  decode {dec / mp:6.2f} s/MP ({base['decode_s_per_mp'] * mp / dec:4.2f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": args.config, "size": args.size, "tile_size": args.tile_size,
                       "threads": torch.get_num_threads(), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
