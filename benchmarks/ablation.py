"""The paper's Table 4 ablation of the spatial context, plus temporal context on/off.

    python benchmarks/ablation.py --data DATA/train --val DATA/val --work RUNS \\
        EVAL_DIR [EVAL_DIR ...] [--steps 1500] [--crop 64] [--parallel 2] [--json OUT]

Trains every variant under ONE budget (same preset, data, seed, steps, crop, batch and
learning rate; only the context model differs), then measures each on the evaluation folders:

    (a) diag x3 with residual blocks   (the anchor; STCM's spatial context)
    (b) checkerboard x3 with residual blocks
    (c) diag x1
    (d) checkerboard x1
    (e) serial x1
    (f) diag x3 without residual blocks
    (g) = (a) without the temporal branch

Spatial rows: BD-rate (PSNR, ``bjontegaard``) of each variant against (a) on the evaluation
images, coded one image at a time. Temporal rows: each evaluation image gets a synthetic
revisit (``stcm.models.revisit``, fixed seed); the revisit is coded with the first image's
latent as temporal reference by (a), and without one by (a) and by (g).

Rates are the model's estimated bits (-log2 of the likelihoods of the rounded latents, as at
decode time), not coded bytes: the runtime decodes serial contexts position by position, far
too slowly for an ablation; on the other variants the container adds well under 1 %. PSNR is
measured on the per-band normalised image in [0, 1], band groups of 3 as the codec codes them.

Training runs are ordinary ``stcm train`` runs in ``--work/<variant>``: they checkpoint and
resume, so rerunning the script continues where an interrupted one stopped, and raising
``--steps`` trains further. ``--parallel`` runs that many at once, one thread each.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stcm.bands import from_band_groups, normalize, to_band_groups
from stcm.models.checkpoint import load_checkpoint
from stcm.models.data import list_images
from stcm.models.revisit import synthetic_revisit
from stcm.evaluation.evaluate import bd_rate, centre_crop
from stcm.runtime.imageio import read_raster


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    flags: tuple[str, ...]  # extra ``stcm train`` arguments


VARIANTS = (
    Variant("a", "diag x3, residual blocks (anchor)", ()),
    Variant("b", "checkerboard x3, residual blocks", ("--context", "checkerboard")),
    Variant("c", "diag x1", ("--context-layers", "1")),
    Variant("d", "checkerboard x1", ("--context", "checkerboard", "--context-layers", "1")),
    Variant("e", "serial x1", ("--context", "serial")),
    Variant("f", "diag x3, no residual blocks", ("--no-context-residual",)),
    Variant("g", "diag x3, residual blocks, no temporal branch", ("--no-temporal",)),
)


def train(variant: Variant, args) -> float:
    """Runs (or resumes) one variant's training; returns its wall time in seconds."""
    out = Path(args.work) / variant.key
    cmd = [sys.executable, "-m", "stcm", "train", "--config", args.config, *variant.flags,
           "--data", args.data, "--out", str(out), "--steps", str(args.steps),
           "--crop", str(args.crop), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
           "--seed", str(args.seed), "--val-every", str(args.steps), "--ckpt-every", "100",
           "--threads", "1", "--quiet"]
    if args.val:
        cmd += ["--val", args.val]
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(out / "ablation.log", "a") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def eval_images(folders: list[str], crop: int | None) -> dict[str, np.ndarray]:
    """Name -> (bands, H, W) float32 in [0, 1], per-band normalised as the codec does."""
    images = {}
    for folder in folders:
        for path in list_images(folder):
            pixels = centre_crop(read_raster(path).pixels, crop)
            images[path.name] = normalize(pixels)[0]
    if not images:
        raise SystemExit(f"no images in {folders}")
    return images


@torch.no_grad()
def code(model, image: np.ndarray, quality: float, reference=None):
    """(bpp, PSNR in dB, latent) of one image through the model's eval forward pass."""
    x = torch.from_numpy(to_band_groups(image))
    out = model(x, quality, reference)
    decoded = from_band_groups(out.x_hat.clamp(0, 1).numpy(), image.shape[0])
    mse = float(np.mean((decoded.astype(np.float64) - image) ** 2))
    bpp = float(out.bits().sum()) / (image.shape[1] * image.shape[2])
    return bpp, -10 * math.log10(max(mse, 1e-12)), out.latent


def average_curve(per_image: dict[str, list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """Mean (bpp, PSNR) over images at each quality."""
    points = np.array(list(per_image.values()))  # (images, qualities, 2)
    return [tuple(p) for p in points.mean(axis=0)]


def bd(anchor: dict, test: dict) -> dict:
    value, note = bd_rate(average_curve(anchor), average_curve(test))
    per_image = {name: bd_rate(anchor[name], test[name])[0] for name in anchor}
    return {"bd_rate": value, "note": note, "per_image": per_image}


def fmt(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.1f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval", nargs="+", help="folders of evaluation images (unseen scenes)")
    parser.add_argument("--data", required=True, help="training folder")
    parser.add_argument("--val", help="validation folder for the training runs")
    parser.add_argument("--work", required=True, help="folder of the variants' training runs")
    parser.add_argument("--config", default="small")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parallel", type=int, default=2, help="training runs at once")
    parser.add_argument("--variants", default="abcdefg", help="subset to train and measure")
    parser.add_argument("--qualities", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--eval-crop", type=int, help="centre crop of the evaluation images")
    parser.add_argument("--eval-only", action="store_true", help="skip training")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    variants = [v for v in VARIANTS if v.key in args.variants]
    if "a" not in args.variants:
        raise SystemExit("the anchor (a) must be among --variants")
    qualities = [float(q) for q in args.qualities.split(",")]

    walls = {}
    if not args.eval_only:
        with ThreadPoolExecutor(max(1, args.parallel)) as pool:
            for v, wall in zip(variants, pool.map(lambda v: train(v, args), variants)):
                walls[v.key] = wall
                print(f"trained ({v.key}) {v.label}: {wall / 60:.1f} min", file=sys.stderr)

    torch.set_num_threads(max(1, args.parallel))
    images = eval_images(args.eval, args.eval_crop)
    rng = np.random.default_rng(args.seed)
    revisits = {name: synthetic_revisit(img, rng) for name, img in images.items()}
    spatial, temporal, steps = {}, {}, {}
    for v in variants:
        path = Path(args.work) / v.key / "checkpoint.safetensors"
        model, meta = load_checkpoint(path)
        steps[v.key] = meta.get("step")
        if steps[v.key] != args.steps:
            print(f"warning: ({v.key}) is at step {steps[v.key]}, not {args.steps}",
                  file=sys.stderr)
        coded = {n: [code(model, img, q) for q in qualities] for n, img in images.items()}
        spatial[v.key] = {n: [c[:2] for c in runs] for n, runs in coded.items()}
        if v.key in "ag":
            # The revisit alone; and, with the temporal branch, given the first image's latent
            # from the pass above.
            temporal[v.key] = {"without reference": {
                n: [code(model, revisits[n], q)[:2] for q in qualities] for n in images}}
            if model.cfg.temporal:
                temporal[v.key]["with reference"] = {
                    n: [code(model, revisits[n], q, c[2])[:2] for q, c in zip(qualities, runs)]
                    for n, runs in coded.items()}
        print(f"measured ({v.key})", file=sys.stderr)

    anchor = spatial["a"]
    rows = []
    print(f"\nbudget: {args.config}, {args.steps} steps, batch {args.batch_size} x "
          f"{args.crop}^2 crops, lr {args.lr}, seed {args.seed}, data {args.data}")
    print(f"evaluated on {len(images)} images ({', '.join(images)}), qualities {qualities}\n")
    print("| | context | BD-rate vs (a) | per image |\n| --- | --- | ---: | --- |")
    for v in variants:
        result = bd(anchor, spatial[v.key])
        rows.append({"variant": v.key, "label": v.label, **result,
                     "curve": average_curve(spatial[v.key])})
        per = ", ".join(fmt(x) for x in result["per_image"].values())
        why = f" ({result['note']})" if result["note"] else ""
        print(f"| ({v.key}) | {v.label} | {fmt(result['bd_rate'])}{why} | {per} |")
    temporal_rows = []
    if "a" in temporal and "g" in temporal:
        base = temporal["a"]["with reference"]
        print("\nrevisits (current image only), BD-rate vs (a) with its temporal reference:")
        for key, mode in (("a", "without reference"), ("g", "without reference")):
            result = bd(base, temporal[key][mode])
            temporal_rows.append({"variant": key, "mode": mode, **result})
            why = f" ({result['note']})" if result["note"] else ""
            print(f"  ({key}) {mode}: {fmt(result['bd_rate'])}{why}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": platform.machine(), "torch": torch.__version__,
            "budget": {"config": args.config, "steps": args.steps, "crop": args.crop,
                       "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                       "data": args.data, "train_minutes": {k: w / 60 for k, w in walls.items()}},
            "trained_steps": steps, "images": list(images), "qualities": qualities,
            "spatial": rows, "temporal": temporal_rows,
            "rates": "estimated bits of the rounded latents", "psnr": "normalised bands, [0, 1]",
        }, indent=1))


if __name__ == "__main__":
    main()
