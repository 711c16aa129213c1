"""The int8 synthesis (``stcm export --int8-synthesis``) against the fp32 engine: speed of g_s
and of whole decodes, and what it costs in rate-distortion.

    python benchmarks/int8_synthesis.py [IMAGE ...] [--crop 512] [--sizes 512,1024]
        [--repeat 5] [--threads 1] [--json OUT]

Both engines are exported from the built-in model into a temporary folder. Speed: g_s alone
on the bundled aerial sample mirrored to each --sizes (its latent through the engine's
``synthesis`` stage), and a whole decode of that image at quality 0.75, the two engines
interleaved, medians of --repeat. Rate-distortion: each IMAGE (default: the val and test
scenes of ``stcm data fetch``; the central --crop x --crop) coded once per quality by the
fp32 engine and decoded by both (the same streams, so the same rates), PSNR in the dtype's
range; BD-rate of the int8 decodes against the fp32 ones (positive: int8 costs bits). The
int8 engine runs its int8 g_s for 8-bit images only, so 16-bit rows must read 0.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from common import sample_image
from stcm.evaluation.evaluate import bd_rate, centre_crop, mse, peak_value, psnr
from stcm.export.onnx import export_engine
from stcm.manifest import INT8_SYNTHESIS
from stcm.runtime.codec import Codec, default_model_path
from stcm.runtime.imageio import read_raster

QUALITIES = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_IMAGES = ("data/val/rgbn_5m.tif", "data/val/spacenet_atlanta_pan.tif",
                  "data/test/neon_osbs_029.tif", "data/test/landsat8_224077.tif",
                  "data/test/landsat8_224078.tif", "data/test/spacenet_vegas_pan.tif")


def interleaved(fns: dict, repeat: int) -> dict[str, float]:
    """Median seconds of each function, the functions called in turn ``repeat`` times."""
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", default=list(DEFAULT_IMAGES))
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--sizes", default="512,1024")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args()
    options = {"threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        fp32_dir, int8_dir = Path(tmp) / "fp32", Path(tmp) / "int8"
        export_engine(default_model_path(), fp32_dir, progress=False)
        export_engine(default_model_path(), int8_dir, int8_synthesis=True, progress=False)
        codecs = {"fp32": Codec(engine=fp32_dir, engine_options=options, progress=False),
                  "int8": Codec(engine=int8_dir, engine_options=options, progress=False)}

        speed = []
        for size in (int(s) for s in args.sizes.split(",")):
            image = sample_image(size)
            data = codecs["fp32"].compress(image, 0.75)
            _, latents = codecs["fp32"]._decompress(data, None)
            latent = np.ascontiguousarray(latents[0])
            stages = {"fp32": "synthesis", "int8": INT8_SYNTHESIS}
            g_s = interleaved({n: (lambda c=c, n=n: c.backend.run(stages[n], latent))
                               for n, c in codecs.items()}, args.repeat)
            decode = interleaved({n: (lambda c=c: c.decompress(data))
                                  for n, c in codecs.items()}, args.repeat)
            row = {"size": size, "g_s_s": g_s, "decode_s": decode,
                   "g_s_speedup": g_s["fp32"] / g_s["int8"],
                   "decode_speedup": decode["fp32"] / decode["int8"]}
            speed.append(row)
            print(f"{size}^2: g_s fp32 {g_s['fp32']:.3f} s, int8 {g_s['int8']:.3f} s "
                  f"({row['g_s_speedup']:.2f}x); decode fp32 {decode['fp32']:.2f} s, int8 "
                  f"{decode['int8']:.2f} s ({row['decode_speedup']:.2f}x)", flush=True)

        quality = []
        for path in args.images:
            image = centre_crop(read_raster(path).pixels, args.crop)
            peak, pixels = peak_value(image), image.shape[1] * image.shape[2]
            curves = {"fp32": [], "int8": []}
            for q in QUALITIES:
                data = codecs["fp32"].compress(image, q)
                for name, codec in codecs.items():
                    decoded = codec.decompress(data)
                    curves[name].append((8 * len(data) / pixels, psnr(mse(image, decoded), peak)))
            bd, note = bd_rate(curves["fp32"], curves["int8"])
            loss = [a[1] - b[1] for a, b in zip(curves["fp32"], curves["int8"])]
            quality.append({"image": path, "dtype": image.dtype.name, "curves": curves,
                            "bd_rate_percent": bd, "note": note, "psnr_loss_db": loss})
            print(f"{path} ({image.dtype.name}): BD-rate int8 vs fp32 {bd:+.2f} %, PSNR loss "
                  f"{min(loss):.3f}..{max(loss):.3f} dB", flush=True)

    result = {"machine": platform.machine(), "threads": args.threads, "repeat": args.repeat,
              "crop": args.crop, "qualities": QUALITIES, "speed": speed, "quality": quality}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
