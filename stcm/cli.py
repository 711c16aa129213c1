"""Command-line interface: a thin layer over the Python API.

    stcm train --config tiny --data DIR --steps 50 --out DIR
    stcm info CHECKPOINT
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stcm.errors import StcmError


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a codec on a folder of images",
                       description="Train an STCM codec (rate-distortion loss, variable rate). "
                       "Resumes automatically when --out holds an earlier run of the same config.")
    p.add_argument("--config", default="small", help="model preset: tiny, small or elic "
                   "(default: small)")
    p.add_argument("--context", choices=["diag", "checkerboard", "serial", "none"],
                   help="spatial context variant (default: the preset's, diag)")
    p.add_argument("--context-layers", type=int, help="stacked masked layers (default 3)")
    p.add_argument("--no-context-residual", action="store_true",
                   help="stack masked layers without residual blocks (ablation)")
    p.add_argument("--no-temporal", action="store_true", help="drop the temporal context branch")
    p.add_argument("--data", required=True, help="folder of PNG/JPEG/TIFF/GeoTIFF/JP2 images")
    p.add_argument("--pairs", help="CSV of real co-registered 'reference,current' image pairs "
                   "(default: synthetic revisits of the training crops)")
    p.add_argument("--out", required=True, help="output folder for checkpoint, state and log")
    p.add_argument("--steps", type=int, default=1000, help="target total steps (default 1000)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=256, help="training crop size (default 256)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-every", type=int, default=200)
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


def _train(args) -> int:
    from stcm.models.config import get_config
    from stcm.models.train import TrainConfig, Trainer

    overrides = {}
    if args.context:
        overrides["context"] = args.context
    if args.context_layers:
        overrides["context_layers"] = args.context_layers
    if args.no_context_residual:
        overrides["context_residual"] = False
    if args.no_temporal:
        overrides["temporal"] = False
    model_cfg = get_config(args.config, **overrides)
    cfg = TrainConfig(data=args.data, out=args.out, steps=args.steps, batch_size=args.batch_size,
                      crop=args.crop, lr=args.lr, seed=args.seed, pairs=args.pairs,
                      val_every=args.val_every, ckpt_every=args.ckpt_every, threads=args.threads)
    trainer = Trainer(model_cfg, cfg, progress=not args.quiet)
    if trainer.step:
        print(f"resuming {args.out} at step {trainer.step}", file=sys.stderr)
    if trainer.step >= cfg.steps:
        print(f"{args.out} is already at step {trainer.step} >= --steps {cfg.steps}; "
              "raise --steps to train further", file=sys.stderr)
        return 0
    try:
        validation = trainer.run()
    except KeyboardInterrupt:
        return 130
    for q, v in validation.items():
        print(f"validation {q}: {v['bpp']:.4f} bpp (estimated), {v['psnr']:.2f} dB PSNR")
    print(f"checkpoint: {Path(args.out) / 'checkpoint.safetensors'}")
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="describe a checkpoint")
    p.add_argument("path", help="checkpoint file or training output folder")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_info)


def _info(args) -> int:
    from stcm.models.checkpoint import load_checkpoint, parameter_counts

    model, meta = load_checkpoint(args.path)
    info = {"kind": "checkpoint", "config": model.cfg.to_dict(),
            "parameters": parameter_counts(model),
            "step": meta.get("step"), "validation": meta.get("validation", {})}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    cfg = model.cfg
    print(f"stcm checkpoint: {args.path}")
    print(f"  model     {cfg.name}: N={cfg.N} M={cfg.M} groups={list(cfg.groups)} "
          f"attention={cfg.attention}")
    layers = f" x{cfg.context_layers}" if cfg.context in ("diag", "checkerboard") else ""
    residual = (" with residual blocks" if cfg.context_residual and cfg.context_layers > 1
                else "")
    print(f"  context   spatial={cfg.context}{layers}{residual}, temporal={cfg.temporal}")
    print(f"  quality   {cfg.num_qualities} trained levels, lambda {cfg.lambdas[0]:g}.."
          f"{cfg.lambdas[-1]:g}, continuous quality in [0, 1]")
    print(f"  params    {info['parameters']['total']:,} "
          + " ".join(f"{k}={v:,}" for k, v in info["parameters"].items() if k != "total"))
    print(f"  trained   {meta.get('step', 0)} steps")
    for q, v in info["validation"].items():
        print(f"  val {q:<5} {v['bpp']:.4f} bpp (estimated), {v['psnr']:.2f} dB")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from stcm import __version__

    parser = argparse.ArgumentParser(prog="stcm", description="Learned compression of "
                                     "remote-sensing imagery (Spatial-Temporal Context Model).")
    parser.add_argument("--version", action="version", version=f"stcm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_info(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StcmError as exc:
        print(f"stcm {args.command}: error: {exc}", file=sys.stderr)
        return 2
