"""Encode-time latent refinement: BD-rate and encode time against plain coding.

    python benchmarks/refine.py [IMAGE ...] [--crop 256] [--bands 3] [--steps 0,10,50,200]
        [--qualities 0,0.25,0.5,0.75,1] [--threads N] [--json OUT]

Codes the central ``--crop`` crop of each image (its first ``--bands`` bands: one band group
by default, so times are per band group) with the built-in model at each quality and each
refinement step count (``Codec.compress(..., refine=N)``), decodes every stream with a second,
plain ``Codec`` (the decoder knows nothing of refinement), and measures bpp from the real
container bytes and PSNR of the decoded image in its own range (``stcm.evaluation.evaluate``).
Prints, per image and N, the BD-rate against N = 0 (negative: fewer bits at equal PSNR) and
the encode time per megapixel; writes everything to ``--json``.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from stcm.runtime.codec import Codec
from stcm.evaluation.evaluate import bd_rate, centre_crop, mse, peak_value, psnr
from stcm.runtime.imageio import read_raster

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("data/test/neon_osbs_029.tif", "data/val/rgbn_5m.tif",
          "data/test/landsat8_224077.tif")


def curve(encoder: Codec, decoder: Codec, image: np.ndarray, qualities: list[float],
          steps: int) -> dict:
    """RD points and encode seconds of one image at one refinement step count."""
    peak = peak_value(image)
    pixels = image.shape[1] * image.shape[2]
    points, seconds = [], []
    for q in qualities:
        start = time.perf_counter()
        data = encoder.compress(image, q, refine=steps)
        seconds.append(time.perf_counter() - start)
        decoded = decoder.decompress(data)
        points.append((8 * len(data) / pixels, psnr(mse(image, decoded), peak)))
    return {"points": points, "encode_s": seconds,
            "encode_s_per_mp": sum(seconds) / len(seconds) / (pixels / 1e6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", help=f"image files (default: {', '.join(IMAGES)})")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--bands", type=int, default=3,
                        help="first bands of each image to code (default 3: one band group)")
    parser.add_argument("--steps", default="0,10,50,200")
    parser.add_argument("--qualities", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = [int(n) for n in args.steps.split(",")]
    if steps[0] != 0:
        steps.insert(0, 0)  # the anchor
    qualities = [float(q) for q in args.qualities.split(",")]
    paths = [Path(p) for p in args.images] or [ROOT / p for p in IMAGES]
    encoder, decoder = Codec(), Codec()
    print(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"built-in model; {args.crop}x{args.crop} central crops, first {args.bands} bands; "
          f"qualities {qualities}")
    results = {}
    for path in paths:
        image = centre_crop(read_raster(path).pixels[: args.bands], args.crop)
        entry = {"shape": list(image.shape), "dtype": str(image.dtype)}
        for n in steps:
            entry[n] = curve(encoder, decoder, image, qualities, n)
            rate, note = bd_rate(entry[0]["points"], entry[n]["points"]) if n else (0.0, None)
            entry[n].update(bd_rate=rate, bd_note=note)
            points = "  ".join(f"{r:.3f}/{d:.2f}" for r, d in entry[n]["points"])
            print(f"{path.name:<22} N={n:<4} bpp/PSNR {points}  BD-rate {rate:+6.2f}%  "
                  f"encode {entry[n]['encode_s_per_mp']:8.1f} s/MP"
                  + (f"  ({note})" if note else ""), flush=True)
        results[path.name] = entry
    print(f"\n{'N':>4}  " + "  ".join(f"{name[:18]:>18}" for name in results)
          + f"  {'mean':>7}  {'encode s/MP':>11}")
    summary = {}
    for n in steps:
        rates = [results[name][n]["bd_rate"] for name in results]
        finite = [r for r in rates if math.isfinite(r)]
        mean = sum(finite) / len(finite) if finite else math.nan
        seconds = float(np.mean([results[name][n]["encode_s_per_mp"] for name in results]))
        summary[n] = {"bd_rate_mean": mean, "encode_s_per_mp": seconds}
        print(f"{n:>4}  " + "  ".join(f"{r:>+17.2f}%" for r in rates)
              + f"  {mean:>+6.2f}%  {seconds:>11.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.machine(), "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "crop": args.crop,
                       "bands": args.bands, "qualities": qualities, "steps": steps,
                       "images": results, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
