"""Wavefront steps on the rows around their anti-diagonal vs on the tile's whole column.

    python benchmarks/sliced_steps.py [--engine DIR | --checkpoint CKPT] [--sizes 512,1024]
        [--repeat 5] [--json OUT]

One codec (the built-in model on the torch backend by default; ``--engine`` an exported
engine on onnxruntime), one stream per size (the bundled aerial sample mirrored to size,
quality 0.75), decoded with ``Backend.sliced_steps`` on and off in turns, so both settings
see the same machine minute by minute. Reports medians of --repeat decodes, whole and the
time inside the step stages, and checks that both settings decode the same pixels (the
step's integers do not depend on how many rows it computes).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np

from common import sample_image
from stcm.evaluation.bench import breakdown
from stcm.runtime.codec import Codec
from stcm.runtime.profile import Recorder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--engine", help="engine directory (onnxruntime backend)")
    source.add_argument("--checkpoint", help="checkpoint (torch backend; default built-in)")
    parser.add_argument("--sizes", default="512,1024")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    codec = Codec(engine=args.engine) if args.engine else Codec(args.checkpoint)
    backend = codec.backend
    recorder = Recorder()  # the step stages' time, as `stcm bench` reports it
    results = {}
    for size in [int(s) for s in args.sizes.split(",")]:
        data = codec.compress(sample_image(size), 0.75)
        times = {True: [], False: []}
        steps = {True: [], False: []}
        pixels = {}
        for _ in range(max(1, args.repeat)):
            for sliced in (False, True):
                backend.sliced_steps = sliced
                codec.recorder = recorder
                recorder.clear()
                start = time.perf_counter()
                pixels[sliced] = codec.decompress(data)
                times[sliced].append(time.perf_counter() - start)
                codec.recorder = None
                steps[sliced].append(breakdown(recorder.spans)["steps: network"])
        if not np.array_equal(pixels[True], pixels[False]):
            raise SystemExit(f"{size}^2: the two settings decoded different pixels")
        row = {f"{key}_{name}_s": statistics.median(values[flag])
               for key, flag in (("whole", False), ("sliced", True))
               for name, values in (("decode", times), ("steps", steps))}
        row["decode_speedup"] = row["whole_decode_s"] / row["sliced_decode_s"]
        row["steps_speedup"] = row["whole_steps_s"] / row["sliced_steps_s"]
        results[size] = row
    print(f"{platform.machine()}, {backend.name} backend, medians of {args.repeat}, "
          "same pixels either way")
    for size, r in results.items():
        mp = size * size / 1e6
        print(f"{size}x{size}: decode {r['whole_decode_s']:.2f} s ({r['whole_decode_s'] / mp:.2f}"
              f" s/MP) whole columns, {r['sliced_decode_s']:.2f} s "
              f"({r['sliced_decode_s'] / mp:.2f} s/MP) sliced, {r['decode_speedup']:.2f}x; "
              f"step stages {r['whole_steps_s']:.2f} -> {r['sliced_steps_s']:.2f} s, "
              f"{r['steps_speedup']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.machine(), "backend": backend.name,
                       "repeat": args.repeat, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
