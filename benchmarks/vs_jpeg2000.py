"""stcm decode time against JPEG 2000 (OpenJPEG via imagecodecs) at similar quality.

    python benchmarks/vs_jpeg2000.py [--checkpoint CKPT] [--size 1024] [--quality 0.75]
        [--repeat 3] [--json OUT]

The reference point users know: the built-in model codes the bundled aerial sample
(mirrored to --size) at --quality; JPEG 2000 is then coded at the target PSNR that stcm
reached, and both decodes are timed (medians of --repeat, one run, same threads). Needs
``pip install 'stcm[eval]'`` (imagecodecs).
"""
from __future__ import annotations

import argparse
import json
import platform

import torch

from common import median_time, sample_image
from stcm.evaluation.classical import Jpeg2000
from stcm.runtime.codec import Codec
from stcm.evaluation.evaluate import mse, peak_value, psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="default: the built-in model")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--quality", type=float, default=0.75)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    image = sample_image(args.size)
    mp = args.size * args.size / 1e6
    codec = Codec(args.checkpoint)
    data = codec.compress(image, args.quality)
    t_stcm, decoded = median_time(lambda: codec.decompress(data), args.repeat)
    peak = peak_value(image)  # 8-bit sample: 255
    target = psnr(mse(image, decoded), peak)
    j2k = Jpeg2000()
    stream = j2k.encode(image, target)
    t_j2k, j2k_decoded = median_time(lambda: j2k.decode(stream), args.repeat)
    rows = {"stcm": (len(data), target, t_stcm),
            "JPEG 2000": (len(stream), psnr(mse(image, j2k_decoded), peak), t_j2k)}
    print(f"{platform.machine()}, torch {torch.get_num_threads()} threads; {codec.cfg.name} "
          f"model, {args.size}x{args.size} aerial sample, medians of {args.repeat}")
    for name, (size, quality, seconds) in rows.items():
        print(f"{name:<10} {8 * size / (args.size ** 2):6.3f} bpp  {quality:6.2f} dB  "
              f"decode {seconds:7.3f} s ({seconds / mp:6.3f} s/MP)")
    print(f"stcm decode / JPEG 2000 decode: {t_stcm / t_j2k:.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.machine(), "threads": torch.get_num_threads(),
                       "size": args.size, "results": {k: {"bytes": v[0], "psnr": v[1],
                                                          "decode_s": v[2]}
                                                      for k, v in rows.items()},
                       "ratio": t_stcm / t_j2k}, f, indent=1)


if __name__ == "__main__":
    main()
