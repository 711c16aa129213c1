"""Temporal context with and without the per-tile mode decision, against coding alone.

    python benchmarks/temporal_modes.py [IMAGE ...] [--crop 512] [--qualities 0,0.25,0.5,0.75,1]
        [--model CKPT] [--threads N] [--json OUT] [--pairs data]

For each image (central ``--crop``, first 3 bands) two pairs: a synthetic revisit of the
crop (``stcm.models.revisit``: shift, radiometric and haze change, local changes) with the
crop as reference, and an unrelated reference (the crop flipped upside down: the same
statistics, little in common position by position). The later image is
coded alone (intra), with ``temporal="on"`` (every tile reads the reference, stcm 0.3) and
``temporal="auto"`` (the per-tile choice), all with real container bytes, decoded, and
compared by BD-rate against intra (negative: fewer bits at equal PSNR), with the share of
tiles the encoder coded intra and the encode time.

``--pairs DATA`` adds the real revisits of ``DATA/SOURCES.json`` (``stcm data fetch``:
Sentinel-2 pairs 5 days to a year apart, one with another footprint, one with a cloudy
reference; ``stcm.models.datasets.PAIRS``), central ``--crop`` of both with their
georeferences (the same window of the ground when both were on it), coded the same three
ways; per quality the file size of ``auto`` against intra is listed too.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from stcm.models.revisit import synthetic_revisit
from stcm.runtime.codec import Codec
from stcm.runtime.container import read_container
from stcm.evaluation.evaluate import bd_rate, centre_crop, mse, peak_value, psnr
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
              qualities: list[float], georefs=(None, None)) -> dict:
    peak = peak_value(current)
    pixels = current.shape[1] * current.shape[2]
    result = {m: {"points": [], "encode_s": [], "bytes": []} for m in MODES}
    result["auto"]["intra_share"] = []
    for q in qualities:
        ref_blob = codec.compress(reference, q, georef=georefs[0])
        for mode in MODES:
            start = time.perf_counter()
            if mode == "intra":
                data = codec.compress(current, q, georef=georefs[1])
            else:
                data = codec.compress(current, q, georef=georefs[1], reference=ref_blob,
                                      temporal=mode)
            result[mode]["encode_s"].append(time.perf_counter() - start)
            result[mode]["bytes"].append(len(data))
            decoded = codec.decompress(data, reference=None if mode == "intra" else ref_blob)
            result[mode]["points"].append((8 * len(data) / pixels,
                                           psnr(mse(current, decoded), peak)))
            if mode == "auto":
                h = read_container(data).header
                # No reference id: auto wrote the image alone, every tile intra.
                result[mode]["intra_share"].append(
                    1.0 if h.reference_id is None else len(h.intra_tiles) / (h.band_groups * h.tiles))
    for mode in ("on", "auto"):
        bd, note = bd_rate(result["intra"]["points"], result[mode]["points"])
        result[mode]["bd_rate_vs_intra"], result[mode]["bd_note"] = bd, note
    return result


def real_pairs(data: Path, crop: int | None) -> dict:
    """{pair name: ((reference, current) pixels, (reference, current) georefs, what)} of the
    fetched real pairs, each cropped to its central ``crop`` with the transform moved along."""
    manifest = json.loads((data / "SOURCES.json").read_text()).get("pairs", {})
    if not manifest:
        raise SystemExit(f"{data}/SOURCES.json lists no pairs: run stcm data fetch --dir {data}")
    out = {}
    for name, pair in manifest.items():
        images, georefs = [], []
        for key in ("reference", "current"):
            raster = read_raster(ROOT / pair[key] if not Path(pair[key]).is_absolute()
                                 else pair[key])
            height, width = raster.pixels.shape[1:]
            size = crop or max(height, width)
            top, left = max((height - size) // 2, 0), max((width - size) // 2, 0)
            images.append(centre_crop(raster.pixels[:3], crop))
            georef = raster.georef
            if georef is not None and georef.transform is not None:
                a, b, c, d, e, f = georef.transform
                georef = dataclasses.replace(georef, transform=(
                    a, b, c + a * left + b * top, d, e, f + d * left + e * top))
            georefs.append(georef)
        out[name] = (tuple(images), tuple(georefs), pair["what"])
    return out


def report(results: dict, label: str, pair: str, r: dict) -> None:
    results["images"].setdefault(label, {})[pair] = r
    share = float(np.mean(r["auto"]["intra_share"]))
    times = "/".join(f"{np.median(r[m]['encode_s']):.2f}" for m in ("on", "auto", "intra"))
    print(f"{label:<26} {pair:<18} {r['on']['bd_rate_vs_intra']:>+11.1f}% "
          f"{r['auto']['bd_rate_vs_intra']:>+13.1f}% {share:>11.0%} {times:>24}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", nargs="*", default=[str(ROOT / i) for i in IMAGES])
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--qualities", default="0,0.25,0.5,0.75,1")
    p.add_argument("--model", help="checkpoint (default: the built-in model)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--pairs", metavar="DATA", help="also code the real pairs of this data "
                   "folder (stcm data fetch)")
    p.add_argument("--only-pairs", action="store_true", help="with --pairs: skip the "
                   "synthetic pairs of the images")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    qualities = [float(q) for q in args.qualities.split(",")]
    codec = Codec(args.model, progress=False)
    results = {"crop": args.crop, "qualities": qualities, "threads": args.threads,
               "machine": platform.processor() or platform.machine(), "images": {}}
    print(f"{'image':<26} {'pair':<18} {'on vs intra':>12} {'auto vs intra':>14} "
          f"{'intra tiles':>12} {'encode on/auto/intra s':>24}")
    for path in [] if args.only_pairs else args.images:
        image = centre_crop(read_raster(path).pixels[:3], args.crop)
        pairs = {"revisit": (image, revisit_of(image, 0)),
                 "unrelated": (np.ascontiguousarray(image[:, ::-1, :]), image)}
        for name, (reference, current) in pairs.items():
            report(results, Path(path).name, name, code_pair(codec, reference, current,
                                                              qualities))
    if args.pairs:
        for name, (images, georefs, what) in real_pairs(Path(args.pairs), args.crop).items():
            r = code_pair(codec, *images, qualities, georefs)
            r["what"] = what
            report(results, "real pairs", name, r)
            ratios = " ".join(f"{a / i:.3f}" for a, i in zip(r["auto"]["bytes"],
                                                             r["intra"]["bytes"]))
            print(f"{'':<26} {'':<18} auto/intra bytes per quality: {ratios}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
