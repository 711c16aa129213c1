"""Peer decode at equal model size: stcm `elic` (diagonal context) vs CompressAI 1.2.8's
`Elic2022Official` (checkerboard context), end to end, same image and threads.

    COMPRESSAI_PATH=... python benchmarks/peer_decode.py [--sizes 512,1024] [--repeat 3]
        [--backend torch|onnxruntime] [--int8-synthesis] [--json OUT]

Random weights for both (decode time does not depend on training beyond the symbol count;
both see the same image). CompressAI is installed apart (benchmarks/compressai_env.py).
Each figure: median of --repeat ``compress``/``decompress`` calls after a warm-up, the two
codecs' calls interleaved round by round (the per-round decode ratios are reported); stcm
through ``stcm.Codec`` (container included), CompressAI through its model's ``compress`` /
``decompress`` (its C++ rANS), on the image padded to a multiple of 64. ``--backend
onnxruntime`` runs stcm as an exported engine (the deployment path; ``--int8-synthesis``
adds the int8 g_s of ``stcm export --int8-synthesis``, used for this 8-bit image).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics

import numpy as np
import torch
import torch.nn.functional as F

from common import engine_for, interleaved_times, sample_image
from compressai_env import import_compressai
from stcm.models.codec import STCM
from stcm.config import get_config
from stcm.runtime.codec import Codec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512,1024")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    parser.add_argument("--int8-synthesis", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    compressai = import_compressai()
    from compressai.models import Elic2022Official

    torch.manual_seed(0)
    peer = Elic2022Official().eval()
    peer.update(force=True)
    model = STCM(get_config("elic")).eval()
    if args.backend == "onnxruntime":
        ours = Codec(engine=engine_for(model, args.int8_synthesis))
    else:
        ours = Codec(model)
    counts = {"stcm elic (diag)": sum(p.numel() for p in model.parameters()),
              "CompressAI Elic2022Official": sum(p.numel() for p in peer.parameters())}
    results = {}
    for size in [int(s) for s in args.sizes.split(",")]:
        image = sample_image(size)
        x = torch.from_numpy(image[None].astype(np.float32) / 255)
        x = F.pad(x, (0, (-size) % 64, 0, (-size) % 64), mode="replicate")
        with torch.no_grad():
            coded = peer.compress(x)
            peer.decompress(coded["strings"], coded["shape"])
        data = ours.compress(image, 0.75)
        ours.decompress(data)

        def peer_decode():
            with torch.no_grad():
                peer.decompress(coded["strings"], coded["shape"])

        def peer_encode():
            with torch.no_grad():
                peer.compress(x)

        # Interleaved, one of each per round: this VM's speed drifts between minutes.
        t = interleaved_times({"peer_decode": peer_decode,
                               "stcm_decode": lambda: ours.decompress(data),
                               "peer_encode": peer_encode,
                               "stcm_encode": lambda: ours.compress(image, 0.75)}, args.repeat)
        m = {k: statistics.median(v) for k, v in t.items()}
        per_round = [p / o for p, o in zip(t["peer_decode"], t["stcm_decode"])]
        results[size] = {"stcm_encode_s": m["stcm_encode"], "stcm_decode_s": m["stcm_decode"],
                         "compressai_encode_s": m["peer_encode"],
                         "compressai_decode_s": m["peer_decode"],
                         "decode_speedup": m["peer_decode"] / m["stcm_decode"],
                         "decode_speedup_per_round": per_round}
    print(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"stcm on {args.backend}{' + int8 g_s' if args.int8_synthesis else ''}, CompressAI {compressai.__version__}; parameters: "
          + ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in counts.items()))
    for size, r in results.items():
        print(f"{size}x{size}: encode stcm {r['stcm_encode_s']:.2f} s, CompressAI "
              f"{r['compressai_encode_s']:.2f} s; decode stcm {r['stcm_decode_s']:.2f} s, "
              f"CompressAI {r['compressai_decode_s']:.2f} s -> stcm {r['decode_speedup']:.2f}x "
              f"as fast (target >= 2x; per round {min(r['decode_speedup_per_round']):.2f}-"
              f"{max(r['decode_speedup_per_round']):.2f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.machine(), "threads": torch.get_num_threads(),
                       "backend": args.backend, "int8_synthesis": args.int8_synthesis,
                       "parameters": counts, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
