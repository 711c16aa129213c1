"""TensorRT plans for an engine directory: one serialized TensorRT engine per stage.

    stcm export CHECKPOINT OUTDIR --tensorrt [--fp16]

``build_engines`` parses each stage's ONNX graph with TensorRT's ONNX parser and writes
``<stage>.plan`` next to it, with one optimization profile per stage whose ranges come from
the names of the dynamic axes (``profile_shapes``). Its return value is the manifest's
``"tensorrt"`` entry::

    {"version": "10.x.y", "fp16": false, "max_batch": 64, "max_size": 4096, "device": ...,
     "stages": {"analysis": {"file": "analysis.plan", "sha256": hex, "precision": "fp32",
                             "profile": {"x": [[1, 3, 64, 64], [1, 3, 1024, 1024],
                                               [1, 3, 4096, 4096]]}}, ...}}

Precision: the entropy stages (``hyper_synthesis``, ``temporal_*``, ``side_*``, ``step_*``,
``recompute_*``) decide the coded distributions, so they are always plain FP32 with TF32
turned off (TF32 is on by default in TensorRT and rounds convolution inputs to 10 mantissa
bits). The other stages are FP32 as well (TF32 off, so they match the ONNX graphs to
~1e-5) unless ``fp16`` is asked for, which lets ``analysis`` and ``synthesis`` run in FP16:
they change the coded latent and the reconstruction, never the decodability of a stream.

A plan is tied to the TensorRT version and the GPU it was built on: build on the machine
(type) that runs it. Encoder and decoder must use plans from the same build to be bit-exact
on the entropy path, like any float backend (see ``runtime/scheduler.py``).

UNTESTED HERE: this module was written against TensorRT 10's documented Python API on a
machine with neither TensorRT nor a GPU; ``tests/export/test_tensorrt.py`` builds and runs
plans where both exist. Only ``profile_shapes``, ``stage_precision`` and the
missing-TensorRT error are exercised on every machine.
"""
from __future__ import annotations

import logging
from pathlib import Path

from stcm.errors import ConfigError, EngineError
from stcm.manifest import sha256_file
from stcm.manifest import StageSignature
from stcm.models.transforms import DOWNSAMPLE, PAD_MULTIPLE

log = logging.getLogger("stcm.tensorrt")

INSTALL_HINT = "TensorRT is not installed; pip install tensorrt on a GPU host"

#: Stages that may run in FP16 when ``fp16=True`` (the entropy stages,
#: ``stcm.manifest.is_entropy_stage``, stay strict FP32 on every build).
FP16_STAGES = frozenset({"analysis", "synthesis"})

#: Padded images are multiples of 64 pixels; the smallest is one 64x64 block.
MIN_IMAGE = PAD_MULTIPLE
#: The image side TensorRT tunes kernels for (clipped to ``max_size``).
OPT_IMAGE = 1024
#: Tile sides and wavefront rows: 1..64 latent positions, tuned for full 64x64 tiles
#: (``Codec(tile_size=...)`` above 64 is outside the profile).
MAX_TILE = 64

_IMAGE_AXES = {"height": 1, "width": 1, "lat_h": DOWNSAMPLE, "lat_w": DOWNSAMPLE,
               "z_h": PAD_MULTIPLE, "z_w": PAD_MULTIPLE}
_TILE_AXES = ("tile_h", "tile_w", "rows")


def stage_precision(stage: str, fp16: bool) -> str:
    """``"fp16"`` for analysis/synthesis when ``fp16`` is asked for, else ``"fp32"`` (TF32 off).

    >>> stage_precision("synthesis", True), stage_precision("side_0", True)
    ('fp16', 'fp32')
    """
    return "fp16" if fp16 and stage in FP16_STAGES else "fp32"


def _check_limits(max_batch: int, max_size: int) -> None:
    if not isinstance(max_batch, int) or max_batch < 1:
        raise ConfigError(f"max_batch must be a positive integer, got {max_batch!r}")
    if not isinstance(max_size, int) or max_size < MIN_IMAGE or max_size % PAD_MULTIPLE:
        raise ConfigError(f"max_size must be a multiple of {PAD_MULTIPLE} pixels, at least "
                          f"{MIN_IMAGE}, got {max_size!r}")


def _axis_range(axis: str, tiled: bool, max_batch: int, max_size: int) -> tuple[int, int, int]:
    if axis == "batch":
        # Tile stages take a chunk of tiles (Codec tile_batch); whole-image stages always
        # run one band group at a time, and a larger maximum would only multiply the
        # activation memory TensorRT reserves for the largest image.
        return (1, 1, max_batch if tiled else 1)
    if axis in _TILE_AXES:
        return (1, MAX_TILE, MAX_TILE)
    if axis in _IMAGE_AXES:
        div = _IMAGE_AXES[axis]
        opt = min(OPT_IMAGE, max_size)
        return (MIN_IMAGE // div, opt // div, max_size // div)
    raise ConfigError(f"no TensorRT profile rule for the dynamic axis {axis!r}")


def profile_shapes(signature: StageSignature, max_batch: int = 64, max_size: int = 4096
                   ) -> dict[str, list[list[int]]]:
    """The optimization profile of one stage: ``{input: [min, opt, max]}`` shapes.

    Ranges follow the axis names: ``batch`` 1/1/``max_batch`` for tile stages (1/1/1 for
    whole-image stages), image sides 64/1024/``max_size``, latent sides those /16, hyper
    latent sides /64, tile sides and rows 1/64/64. Fixed (integer) axes are their value.

    >>> from stcm.manifest import TensorSpec
    >>> sig = StageSignature("analysis", (TensorSpec("x", ("batch", 3, "height", "width")),),
    ...                      (TensorSpec("y", ("batch", 8, "lat_h", "lat_w")),))
    >>> profile_shapes(sig, max_size=2048)
    {'x': [[1, 3, 64, 64], [1, 3, 1024, 1024], [1, 3, 2048, 2048]]}
    """
    _check_limits(max_batch, max_size)
    tiled = any(d in _TILE_AXES for spec in signature.inputs for d in spec.shape)
    shapes = {}
    for spec in signature.inputs:
        ranges = [(d, d, d) if isinstance(d, int) else _axis_range(d, tiled, max_batch, max_size)
                  for d in spec.shape]
        shapes[spec.name] = [[r[i] for r in ranges] for i in range(3)]
    return shapes


def import_tensorrt():
    """The ``tensorrt`` module, or a ``ConfigError`` saying how to get it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise ConfigError(INSTALL_HINT) from exc
    return tensorrt


_LOGGER = None


def tensorrt_logger(trt):
    """The process-wide TensorRT logger (TensorRT treats its logger as a singleton, so the
    builder and every runtime share this one). It forwards warnings to the ``stcm.tensorrt``
    logging channel and keeps errors in ``.errors`` for our exception messages."""
    global _LOGGER
    if _LOGGER is None:
        severity = trt.ILogger.Severity

        class _Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, level, msg):
                if level in (severity.INTERNAL_ERROR, severity.ERROR):
                    self.errors.append(str(msg))
                    log.error("%s", msg)
                elif level == severity.WARNING:
                    log.warning("%s", msg)
                else:
                    log.debug("%s", msg)

            def take(self) -> list[str]:
                errors, self.errors = self.errors, []
                return errors

        _LOGGER = _Logger()
    return _LOGGER


def _parser_errors(parser) -> list[str]:
    messages = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        text = str(error.desc())
        node = ""
        for attr in ("node_name", "node_operator"):  # TensorRT >= 8.6
            try:
                value = getattr(error, attr)()
            except Exception:  # noqa: BLE001 - older bindings lack them
                value = ""
            if value:
                node += f" {value}"
        messages.append(f"{text} (node{node})" if node else text)
    return messages


def _device() -> dict | None:
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            return {"name": torch.cuda.get_device_name(), "capability": f"{major}.{minor}"}
    except Exception:  # noqa: BLE001 - informational only
        pass
    return None


def build_engines(folder: Path, manifest: dict, *, fp16: bool = False,
                  workspace_gb: float = 4, max_batch: int = 64, max_size: int = 4096) -> dict:
    """Builds ``<stage>.plan`` in ``folder`` for every stage of ``manifest`` and returns the
    manifest's ``"tensorrt"`` entry (see the module docstring).

    Args:
        folder: the engine directory holding the stages' ONNX files (plans go next to them).
        manifest: the engine manifest being written (its ``"stages"`` are read).
        fp16: let ``analysis`` and ``synthesis`` run in FP16; the entropy stages stay FP32.
        workspace_gb: TensorRT's workspace memory pool limit, in GiB.
        max_batch: the most tiles one tile-stage call may hold.
        max_size: the largest padded image side in pixels (a multiple of 64); TensorRT
            reserves activation memory for it, so lower it on small GPUs.

    Raises:
        ConfigError: TensorRT is not installed, or the limits are invalid.
        EngineError: a graph does not parse or a plan does not build (with TensorRT's
            messages).

    Untested here (no TensorRT or GPU on the development machine).
    """
    folder = Path(folder)
    _check_limits(max_batch, max_size)
    if not workspace_gb > 0:
        raise ConfigError(f"workspace_gb must be positive, got {workspace_gb!r}")
    signatures = {name: StageSignature.from_dict(name, entry)
                  for name, entry in manifest["stages"].items()}
    profiles = {name: profile_shapes(sig, max_batch, max_size)
                for name, sig in signatures.items()}
    trt = import_tensorrt()
    if fp16 and not hasattr(trt.BuilderFlag, "FP16"):
        raise ConfigError(f"TensorRT {trt.__version__} has no FP16 builder flag (weak typing "
                          "was removed in TensorRT 11); export without --fp16")
    logger = tensorrt_logger(trt)
    logger.take()
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # the bindings raise when the C++ factory returns null
        raise EngineError("TensorRT could not create a builder (is a CUDA GPU visible?): "
                          + "; ".join(logger.take() or [str(exc)])) from exc
    # Networks are always explicit-batch in TensorRT 10 (the flag is deprecated there).
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    stages = {}
    for name, entry in manifest["stages"].items():
        path = folder / entry["file"]
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(path)):
            messages = _parser_errors(parser) or logger.take()
            raise EngineError(f"TensorRT cannot parse {path.name} ({name}): "
                              + "; ".join(messages))
        inputs = [network.get_input(i).name for i in range(network.num_inputs)]
        expected = [spec.name for spec in signatures[name].inputs]
        if not set(inputs) <= set(expected):
            raise EngineError(f"{path.name}: TensorRT sees inputs {inputs}, the manifest says "
                              f"{expected}; re-export the engine")

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
        if hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)
        precision = stage_precision(name, fp16)
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        for input_name in inputs:
            profile.set_shape(input_name, *profiles[name][input_name])
        if config.add_optimization_profile(profile) < 0:
            raise EngineError(f"TensorRT rejected the optimization profile of {name}: "
                              + "; ".join(logger.take()))

        logger.take()
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise EngineError(f"TensorRT could not build {name} ({precision}): "
                              + ("; ".join(logger.take()) or "no message"))
        plan = folder / f"{name}.plan"
        with open(plan, "wb") as f:
            f.write(serialized)
        stages[name] = {"file": plan.name, "sha256": sha256_file(plan), "precision": precision,
                        "profile": profiles[name]}
        del parser, network, config, serialized
    return {"version": trt.__version__, "fp16": bool(fp16), "max_batch": max_batch,
            "max_size": max_size, "device": _device(), "stages": stages}
