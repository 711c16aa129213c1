"""What is exact and what is not: one set of streams decoded by the torch backend on 1 and on
2 threads (separate processes) and by the onnxruntime engine, compared latent by latent and
pixel by pixel.

    python benchmarks/pixel_determinism.py [--crops 22] [--size 128] [--quality 0.75]

The streams are written once (built-in model, torch, this process); each decoder runs in a
fresh process with its own thread setting and returns the decoded pixels and latents. The
latents must agree exactly (the exact entropy path: docs/determinism.md); the pixels come out
of g_s, a float network, and may not. Prints, per decoder pair, the crops whose latents /
pixels differ, the share of samples that differ and the largest difference in levels.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import sample_crops

DECODE = """
import sys, numpy as np, torch
threads, engine, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3]
torch.set_num_threads(threads)
from pathlib import Path
from stcm.runtime.codec import Codec
codec = Codec(engine=engine, engine_options={"threads": threads}) if engine != "-" else Codec()
for path in sorted(Path(folder).glob("*.stcm")):
    image, latents = codec._decompress(path.read_bytes(), None)
    np.save(path.with_suffix(f".{sys.argv[4]}.pixels.npy"), image.pixels)
    np.save(path.with_suffix(f".{sys.argv[4]}.latent.npy"),
            np.concatenate([np.asarray(t) for t in latents], axis=1))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=22)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--quality", type=float, default=0.75)
    parser.add_argument("--json")
    args = parser.parse_args()
    from stcm.export.onnx import export_engine
    from stcm.runtime.codec import Codec, default_model_path

    codec = Codec()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        engine = export_engine(default_model_path(), folder / "engine").parent
        crops = sample_crops(args.crops, args.size)
        for i, crop in enumerate(crops):
            (folder / f"{i:03d}.stcm").write_bytes(codec.compress(crop, args.quality))
        runs = {"torch-1": ("1", "-"), "torch-2": ("2", "-"), "ort-2": ("2", str(engine))}
        for name, (threads, eng) in runs.items():
            subprocess.run([sys.executable, "-c", DECODE, threads, eng, str(folder), name],
                           check=True)
        results = {}
        for a, b in (("torch-1", "torch-2"), ("torch-2", "ort-2"), ("torch-1", "ort-2")):
            latent_crops = pixel_crops = differing = samples = 0
            worst = 0
            for path in sorted(folder.glob("*.stcm")):
                la, lb = (np.load(path.with_suffix(f".{n}.latent.npy")) for n in (a, b))
                pa, pb = (np.load(path.with_suffix(f".{n}.pixels.npy")).astype(np.int64)
                          for n in (a, b))
                latent_crops += not np.array_equal(la, lb)
                diff = np.abs(pa - pb)
                pixel_crops += bool(diff.any())
                differing += int((diff > 0).sum())
                samples += diff.size
                worst = max(worst, int(diff.max()))
            results[f"{a} vs {b}"] = {"crops": len(crops), "latent_crops_differing": latent_crops,
                                      "pixel_crops_differing": pixel_crops,
                                      "samples_differing": differing, "samples": samples,
                                      "max_level_difference": worst}
    print(f"{args.crops} crops of {args.size}^2 from the bundled samples, quality "
          f"{args.quality}, built-in model; streams written once by torch")
    for pair, r in results.items():
        print(f"  {pair:<18} latents differ on {r['latent_crops_differing']}/{r['crops']} "
              f"crops; pixels differ on {r['pixel_crops_differing']}/{r['crops']} crops, "
              f"{r['samples_differing']:,} of {r['samples']:,} samples "
              f"({100 * r['samples_differing'] / r['samples']:.4f} %), at most "
              f"{r['max_level_difference']} level(s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
