"""Window decode vs the full decode of a large scene: time and bytes of streams read.

    python benchmarks/window_decode.py [--size 4096] [--window 512] [--tile-sizes 64,16]
        [--repeat 3] [--threads 1] [--json OUT]

The bundled aerial RGB sample mirrored out to --size x --size (one band group), coded once per
tile size with the built-in model on the torch backend; then the full decode and the decode of
a --window x --window window at the scene's centre (``Codec.decompress(window=...)``),
medians of --repeat runs each (the full decode --repeat-full times). Bytes read: the
container's bytes outside the streams plus every stream ``Container.stream`` returned.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch

from common import median_time, sample_image
from stcm.runtime import container as container_module
from stcm.runtime.codec import Codec
from stcm.runtime.container import read_container


def bytes_read(fn) -> tuple[int, object]:
    """(stream bytes ``fn`` read through ``Container.stream``, its result)."""
    original, total = container_module.Container.stream, [0]

    def counting(self, band_group, kind, tile):
        data = original(self, band_group, kind, tile)
        total[0] += len(data)
        return data

    container_module.Container.stream = counting
    try:
        result = fn()
    finally:
        container_module.Container.stream = original
    return total[0], result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--tile-sizes", default="64,16")
    parser.add_argument("--quality", type=float, default=0.75)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--repeat-full", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = sample_image(args.size)
    offset = (args.size - args.window) // 2
    window = (offset, offset, args.window, args.window)
    runs = []
    for tile_size in (int(t) for t in args.tile_sizes.split(",")):
        codec = Codec(tile_size=tile_size)
        encode_s, data = median_time(lambda: codec.compress(image, args.quality), 1)
        header_bytes = read_container(data).header_bytes
        full_bytes, (full_s, full) = bytes_read(
            lambda: median_time(lambda: codec.decompress(data), args.repeat_full))
        window_bytes, (window_s, part) = bytes_read(
            lambda: median_time(lambda: codec.decompress(data, window=window), args.repeat))
        c, r, w, h = window
        crop = full[:, r: r + h, c: c + w]
        plan, _ = codec._window_plan(read_container(data).header, window)
        run = {
            "tile_size": tile_size, "tiles": plan.grid.count,
            "tiles_decoded_per_group": [len(g.tiles) for g in plan.groups],
            "encode_s": encode_s, "container_bytes": len(data),
            "full_decode_s": full_s, "window_decode_s": window_s,
            "speedup": full_s / window_s,
            # per decode (the counts above add up every repeat)
            "full_bytes_read": header_bytes + full_bytes // args.repeat_full,
            "window_bytes_read": header_bytes + window_bytes // args.repeat,
            "pixels_equal": bool(np.array_equal(part, crop)),
            "max_abs_difference": int(np.abs(part.astype(int) - crop.astype(int)).max()),
        }
        run["bytes_ratio"] = run["full_bytes_read"] / run["window_bytes_read"]
        runs.append(run)
        print(f"tiles of {tile_size}: full {full_s:.2f} s, {run['full_bytes_read']:,} B; "
              f"window {window_s:.2f} s, {run['window_bytes_read']:,} B: "
              f"{run['speedup']:.1f}x faster, {run['bytes_ratio']:.1f}x fewer bytes; tiles "
              f"per group {run['tiles_decoded_per_group']} of {plan.grid.count}; pixels "
              f"equal: {run['pixels_equal']}", flush=True)
    result = {"machine": platform.machine(), "size": args.size, "window": window,
              "quality": args.quality, "threads": args.threads, "repeat": args.repeat,
              "repeat_full": args.repeat_full, "runs": runs}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
