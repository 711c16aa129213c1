"""Rate-distortion cost of the exact entropy path: an exact model against a float one.

    python benchmarks/exact_rd.py --float FLOAT_CKPT --exact EXACT_CKPT DIR [DIR ...]
        [--crop 512] [--qualities 0,0.25,0.5,0.75,1] [--json OUT]

Codes every image of the folders (its centre crop of ``--crop`` pixels; 3-band groups as
the codec does) with both models at each quality, end to end through ``stcm.Codec``: real
stream bytes, PSNR of the decoded image in its own range. Prints the RD points and the
BD-rate of the exact model against the float one (``bjontegaard``, a benchmark-only
dependency: ``pip install bjontegaard``), per image and on the average curve.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from stcm.models.data import list_images
from stcm.runtime.codec import Codec
from stcm.evaluation.evaluate import centre_crop, mse, psnr
from stcm.runtime.imageio import read_raster


def curve(codec: Codec, image: np.ndarray, qualities: list[float]) -> tuple[list, list]:
    peak = 255.0 if image.dtype == np.uint8 else float(image.max() - image.min()) or 1.0
    rates, dists = [], []
    for q in qualities:
        data = codec.compress(image, q)
        rates.append(8 * len(data) / (image.shape[1] * image.shape[2]))
        dists.append(psnr(mse(image, codec.decompress(data)), peak))
    return rates, dists


def main() -> None:
    import bjontegaard as bd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--float", dest="float_ckpt", required=True)
    parser.add_argument("--exact", dest="exact_ckpt", required=True)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--qualities", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--json")
    args = parser.parse_args()
    qualities = [float(q) for q in args.qualities.split(",")]
    codecs = {"float": Codec(args.float_ckpt), "exact": Codec(args.exact_ckpt)}
    assert not codecs["float"].cfg.exact and codecs["exact"].cfg.exact
    results = {}
    for path in [p for folder in args.folders for p in list_images(folder)]:
        image = centre_crop(read_raster(path).pixels, args.crop)
        entry = {name: curve(codec, image, qualities) for name, codec in codecs.items()}
        entry["bd_rate"] = bd.bd_rate(*entry["float"], *entry["exact"], method="akima")
        results[Path(path).name] = entry
        for name in codecs:
            points = "  ".join(f"{r:.3f}/{d:.2f}" for r, d in zip(*entry[name]))
            print(f"{Path(path).name:<24} {name:<6} bpp/PSNR {points}")
        print(f"{Path(path).name:<24} BD-rate exact vs float {entry['bd_rate']:+.2f}%")
    mean = {name: [np.mean([e[name][i] for e in results.values()], axis=0).tolist()
                   for i in range(2)] for name in codecs}
    overall = bd.bd_rate(*mean["float"], *mean["exact"], method="akima")
    per_image = float(np.mean([e["bd_rate"] for e in results.values()]))
    print(f"average curve: BD-rate exact vs float {overall:+.2f}% "
          f"(mean of per-image BD-rates {per_image:+.2f}%)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"qualities": qualities, "crop": args.crop, "images": results,
                       "bd_rate_average_curve": overall, "bd_rate_mean": per_image}, f, indent=1)


if __name__ == "__main__":
    main()
