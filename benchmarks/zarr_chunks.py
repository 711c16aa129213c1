"""What the zarr chunk size costs: one image coded whole and as chunks of several sizes, each
chunk one stcm stream (as ``stcm.zarr`` stores it), in bytes and PSNR.

    python benchmarks/zarr_chunks.py [--size 1024] [--chunks 64,128,200,256,512]
                                     [--quality 0.75] [--json OUT]

The bundled aerial RGB sample mirrored out to ``--size``² (``common.sample_image``), the
built-in model; a chunk is cut from the image the way zarr cuts it (edge chunks hold only
the in-bounds pixels: ``StcmSerializer`` does not code zarr's fill padding). Overhead is the
chunks' total bytes against the whole image's container.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
from common import sample_image

from stcm.zarr import Stcm


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / np.mean((a.astype(np.float64) - b) ** 2)))


def code_in_chunks(codec: Stcm, image: np.ndarray, chunk: int) -> dict:
    h, w = image.shape[1:]
    back = np.empty_like(image)
    total, count = 0, 0
    start = time.perf_counter()
    for r in range(0, h, chunk):
        for c in range(0, w, chunk):
            data = codec.encode(image[:, r:r + chunk, c:c + chunk])
            back[:, r:r + chunk, c:c + chunk] = codec.decode(data)
            total, count = total + len(data), count + 1
    seconds = time.perf_counter() - start
    return {"chunk": chunk, "chunks": count, "bytes": total, "bytes_per_chunk": total / count,
            "bpp": 8 * total / (h * w), "psnr_db": psnr(image, back),
            "encode_decode_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--chunks", default="64,128,200,256,512")
    parser.add_argument("--quality", type=float, default=0.75)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    image = sample_image(args.size)
    codec = Stcm(quality=args.quality, layout="chw")
    whole = code_in_chunks(codec, image, args.size)
    rows = [code_in_chunks(codec, image, int(c)) for c in args.chunks.split(",")]
    print(f"{platform.machine()}, torch {torch.__version__}, 1 thread; {args.size}² aerial "
          f"RGB uint8, quality {args.quality}")
    print(f"{'chunk':>6} {'chunks':>6} {'bytes':>9} {'B/chunk':>8} {'bpp':>6} {'overhead':>8} "
          f"{'PSNR':>6}")
    for r in [whole, *rows]:
        r["overhead"] = r["bytes"] / whole["bytes"] - 1
        print(f"{r['chunk']:>6} {r['chunks']:>6} {r['bytes']:>9} {r['bytes_per_chunk']:>8.0f} "
              f"{r['bpp']:>6.3f} {100 * r['overhead']:>7.1f}% {r['psnr_db']:>6.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.machine(), "torch": torch.__version__,
                       "size": args.size, "quality": args.quality, "whole": whole,
                       "chunked": rows}, f, indent=1)


if __name__ == "__main__":
    main()
