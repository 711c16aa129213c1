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
import tempfile

import torch

from common import median_time, sample_crops, sample_image
from stcm.export.onnx import export_engine
from stcm.models.checkpoint import load_checkpoint
from stcm.models.codec import STCM
from stcm.config import get_config
from stcm.runtime.codec import Codec


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
        image = sample_image(args.size)
        mp = args.size ** 2 / 1e6
        print(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
              f"threads; model {model.cfg.name}; {args.size}x{args.size}; medians of "
              f"{args.repeat}")
        results = {}
        for name, codec in codecs.items():
            codec.decompress(codec.compress(image, 0.75))  # warm-up (sessions, allocators)
            enc, data = median_time(lambda: codec.compress(image, 0.75), args.repeat)
            dec, _ = median_time(lambda: codec.decompress(data), args.repeat)
            results[name] = {"encode_s_per_mp": enc / mp, "decode_s_per_mp": dec / mp}
            print(f"{name:<12} encode {enc / mp:7.3f} s/MP   decode {dec / mp:7.3f} s/MP")
        ratio = results["torch"]["decode_s_per_mp"] / results["onnxruntime"]["decode_s_per_mp"]
        print(f"onnxruntime decode is {ratio:.2f}x the speed of torch")
        crops = sample_crops(args.crops, args.crop_size)
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
