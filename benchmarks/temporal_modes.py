"""Temporal context with and without the per-tile mode decision, against coding alone.

    python benchmarks/temporal_modes.py [IMAGE ...] [--crop 512] [--qualities 0,0.25,0.5,0.75,1]
        [--model CKPT] [--threads N] [--json OUT]

For each image (central ``--crop``, first 3 bands) two pairs: a synthetic revisit of the
crop (``stcm.models.revisit``: shift, radiometric and haze change, local changes) with the
crop as reference, and an unrelated reference (the crop flipped upside down: the same
statistics, little in common position by position). The later image is
coded alone (intra), with ``temporal="on"`` (every tile reads the reference, stcm 0.3) and
``temporal="auto"`` (the per-tile choice), all with real container bytes, decoded, and
compared by BD-rate against intra (negative: fewer bits at equal PSNR), with the share of
tiles the encoder coded intra and the encode time.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from stcm.models.revisit import synthetic_revisit
from stcm.runtime.codec import Codec
from stcm.runtime.container import read_container
from stcm.runtime.evaluate import bd_rate, centre_crop, mse, peak_value, psnr
from stcm.runtime.imageio import read_raster

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("data/val/rgbn_5m.tif", "data/test/neon_osbs_029.tif",
          "data/test/landsat8_224077.tif")
MODES = ("intra", "on", "auto")


def revisit_of(image: np.ndarray, seed: int) -> np.ndarray:
    """A synthetic later acquisition of ``image`` in its own dtype and range."""
    lo, hi = float(image.min()), float(image.max())
    x = (image.astype(np.float64) - lo) / max(hi - lo, 1e-9)
    later = synthetic_revisit(x.astype(np.float32), np.random.default_rng(seed))
    out = lo + later.astype(np.float64) * (hi - lo)
    return np.rint(out).astype(image.dtype) if image.dtype.kind in "ui" else out.astype(
        image.dtype)


def code_pair(codec: Codec, reference: np.ndarray, current: np.ndarray,
              qualities: list[float]) -> dict:
    peak = peak_value(current)
    pixels = current.shape[1] * current.shape[2]
    result = {m: {"points": [], "encode_s": []} for m in MODES}
    result["auto"]["intra_share"] = []
    for q in qualities:
        ref_blob = codec.compress(reference, q)
        for mode in MODES:
            start = time.perf_counter()
            if mode == "intra":
                data = codec.compress(current, q)
            else:
                data = codec.compress(current, q, reference=ref_blob, temporal=mode)
            result[mode]["encode_s"].append(time.perf_counter() - start)
            decoded = codec.decompress(data, reference=None if mode == "intra" else ref_blob)
            result[mode]["points"].append((8 * len(data) / pixels,
                                           psnr(mse(current, decoded), peak)))
            if mode == "auto":
                h = read_container(data).header
                result[mode]["intra_share"].append(len(h.intra_tiles) / (h.band_groups * h.tiles))
    for mode in ("on", "auto"):
        bd, note = bd_rate(result["intra"]["points"], result[mode]["points"])
        result[mode]["bd_rate_vs_intra"], result[mode]["bd_note"] = bd, note
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", nargs="*", default=[str(ROOT / i) for i in IMAGES])
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--qualities", default="0,0.25,0.5,0.75,1")
    p.add_argument("--model", help="checkpoint (default: the built-in model)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    qualities = [float(q) for q in args.qualities.split(",")]
    codec = Codec(args.model, progress=False)
    results = {"crop": args.crop, "qualities": qualities, "threads": args.threads,
               "machine": platform.processor() or platform.machine(), "images": {}}
    print(f"{'image':<22} {'pair':<10} {'on vs intra':>12} {'auto vs intra':>14} "
          f"{'intra tiles':>12} {'encode on/auto/intra s':>24}")
    for path in args.images:
        image = centre_crop(read_raster(path).pixels[:3], args.crop)
        pairs = {"revisit": (image, revisit_of(image, 0)),
                 "unrelated": (np.ascontiguousarray(image[:, ::-1, :]), image)}
        results["images"][Path(path).name] = {}
        for name, (reference, current) in pairs.items():
            r = code_pair(codec, reference, current, qualities)
            results["images"][Path(path).name][name] = r
            share = float(np.mean(r["auto"]["intra_share"]))
            times = "/".join(f"{np.median(r[m]['encode_s']):.2f}" for m in ("on", "auto", "intra"))
            print(f"{Path(path).name:<22} {name:<10} {r['on']['bd_rate_vs_intra']:>+11.1f}% "
                  f"{r['auto']['bd_rate_vs_intra']:>+13.1f}% {share:>11.0%} {times:>24}",
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
