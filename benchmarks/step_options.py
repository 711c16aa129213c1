"""A wavefront-step option of the backend, off against on, decoding the same streams.

    python benchmarks/step_options.py [--option sliced_steps|wide_step_threads]
        [--engine DIR | --checkpoint CKPT] [--sizes 512,1024] [--repeat 5] [--json OUT]

Options (backend attributes):
    sliced_steps       the steps of exact models run on the rows around their anti-diagonal
                       instead of the tile's whole column (runtime/wavefront.py)
    wide_step_threads  onnxruntime: one-tile calls of wide step graphs run on the backend's
                       threads, spinning within a call, instead of one thread

One codec (the built-in model on the torch backend by default; ``--engine`` an exported
engine on onnxruntime), one stream per size (the bundled aerial sample mirrored to size,
quality 0.75), decoded with the option off and on in turns, so both settings see the same
machine minute by minute. Reports medians of --repeat decodes, whole and the time inside
the step stages, and checks that both settings decode the same pixels (the exact step's
integers depend neither on how many rows it computes nor on threads).
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
    parser.add_argument("--option", choices=("sliced_steps", "wide_step_threads"),
                        default="sliced_steps")
    parser.add_argument("--sizes", default="512,1024")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    codec = Codec(engine=args.engine) if args.engine else Codec(args.checkpoint)
    backend = codec.backend
    if not hasattr(backend, args.option):
        parser.error(f"the {backend.name} backend has no option {args.option}")
    recorder = Recorder()  # the step stages' time, as `stcm bench` reports it
    results = {}
    for size in [int(s) for s in args.sizes.split(",")]:
        data = codec.compress(sample_image(size), 0.75)
        times = {True: [], False: []}
        steps = {True: [], False: []}
        pixels = {}
        for _ in range(max(1, args.repeat)):
            for on in (False, True):
                setattr(backend, args.option, on)
                codec.recorder = recorder
                recorder.clear()
                start = time.perf_counter()
                pixels[on] = codec.decompress(data)
                times[on].append(time.perf_counter() - start)
                codec.recorder = None
                steps[on].append(breakdown(recorder.spans)["steps: network"])
        if not np.array_equal(pixels[True], pixels[False]):
            raise SystemExit(f"{size}^2: the two settings decoded different pixels")
        row = {f"{key}_{name}_s": statistics.median(values[flag])
               for key, flag in (("off", False), ("on", True))
               for name, values in (("decode", times), ("steps", steps))}
        row["decode_speedup"] = row["off_decode_s"] / row["on_decode_s"]
        row["steps_speedup"] = row["off_steps_s"] / row["on_steps_s"]
        results[size] = row
    print(f"{platform.machine()}, {backend.name} backend, {args.option} off -> on, medians of "
          f"{args.repeat}, same pixels either way")
    for size, r in results.items():
        mp = size * size / 1e6
        print(f"{size}x{size}: decode {r['off_decode_s']:.2f} s ({r['off_decode_s'] / mp:.2f}"
              f" s/MP) -> {r['on_decode_s']:.2f} s ({r['on_decode_s'] / mp:.2f} s/MP), "
              f"{r['decode_speedup']:.2f}x; step stages {r['off_steps_s']:.2f} -> "
              f"{r['on_steps_s']:.2f} s, {r['steps_speedup']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.machine(), "backend": backend.name,
                       "option": args.option, "repeat": args.repeat, "results": results},
                      f, indent=1)


if __name__ == "__main__":
    main()
