"""torch vs onnxruntime backends: encode/decode time per megapixel, and how often a stream
written by one decodes exactly on the other.

    python benchmarks/backends.py [--checkpoint CKPT | --config small] [--size 512]
        [--repeat 3] [--crops 50]

Both backends run the same scheduler and entropy coder; only the stages differ. Cross-backend
decoding is refused by stcm.Codec for float models (streams record their numerics); here it
is forced (strict_numerics=False) to measure the exact-decode rate over random crops of the
bundled samples.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import numpy as np
import torch

from stcm import SAMPLES_DIR
from stcm.export.onnx import export_engine
from stcm.models.checkpoint import load_checkpoint
from stcm.models.codec import STCM
from stcm.models.config import get_config
from stcm.runtime.codec import Codec
from stcm.runtime.imageio import read_raster


def _median(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _image(size: int) -> np.ndarray:
    pixels = read_raster(SAMPLES_DIR / "neon_osbs_rgb8.tif").pixels
    reps = -(-size // pixels.shape[1])
    tiled = np.tile(np.concatenate([pixels, pixels[:, ::-1]], axis=1), (1, reps, reps))
    return np.ascontiguousarray(tiled[:, :size, :size])


def _crops(n, size, seed=0):
    rng = np.random.default_rng(seed)
    images = [read_raster(p).pixels for p in sorted(SAMPLES_DIR.glob("*.tif"))]
    out = []
    for i in range(n):
        img = images[i % len(images)]
        r, c = (rng.integers(0, s - size + 1) for s in img.shape[1:])
        out.append(img[rng.choice(img.shape[0], 3, replace=False), r: r + size, c: c + size])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--config", default="small")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--crops", type=int, default=50)
    parser.add_argument("--crop-size", type=int, default=128)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_checkpoint(args.checkpoint)[0] if args.checkpoint else STCM(get_config(args.config))
    with tempfile.TemporaryDirectory() as tmp:
        export_engine(model, f"{tmp}/engine", progress=False)
        codecs = {"torch": Codec(model, strict_numerics=False),
                  "onnxruntime": Codec(engine=f"{tmp}/engine", strict_numerics=False)}
        image = _image(args.size)
        mp = args.size ** 2 / 1e6
        print(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
              f"threads; model {model.cfg.name}; {args.size}x{args.size}; medians of "
              f"{args.repeat}")
        results = {}
        for name, codec in codecs.items():
            codec.decompress(codec.compress(image, 0.75))  # warm-up (sessions, allocators)
            enc, data = _median(lambda: codec.compress(image, 0.75), args.repeat)
            dec, _ = _median(lambda: codec.decompress(data), args.repeat)
            results[name] = {"encode_s_per_mp": enc / mp, "decode_s_per_mp": dec / mp}
            print(f"{name:<12} encode {enc / mp:7.3f} s/MP   decode {dec / mp:7.3f} s/MP")
        ratio = results["torch"]["decode_s_per_mp"] / results["onnxruntime"]["decode_s_per_mp"]
        print(f"onnxruntime decode is {ratio:.2f}x the speed of torch")
        crops = _crops(args.crops, args.crop_size)
        exact = {}
        for enc_name, dec_name in (("torch", "onnxruntime"), ("onnxruntime", "torch")):
            enc, dec = codecs[enc_name], codecs[dec_name]
            count = 0
            for crop in crops:
                data, latents = enc._compress(crop, 0.75, None, None, None)
                try:
                    decoded = dec._decompress(data, None)[1]
                    count += all(torch.equal(a, b) for a, b in zip(latents, decoded))
                except Exception:  # a garbled stream may also fail its final ANS check
                    pass
            exact[f"{enc_name}->{dec_name}"] = count
            print(f"encoded {enc_name:<12} decoded {dec_name:<12} exact: {count}/{len(crops)}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": platform.machine(), "size": args.size,
                           "config": model.cfg.name, "timings": results,
                           "cross_backend_exact": exact, "crops": len(crops)}, f, indent=2)


if __name__ == "__main__":
    main()
