"""The TensorRT backend: runs an engine's serialized TensorRT plans on a CUDA GPU.

    stcm export CHECKPOINT DIR --tensorrt          # builds DIR/<stage>.plan (export/tensorrt.py)
    Codec(engine=DIR, backend="tensorrt")

Each stage's plan is deserialized on first use and gets one execution context. A call copies
its NumPy inputs to CUDA tensors (torch owns all device memory), sets the input shapes, sizes
the outputs from the shapes TensorRT infers, enqueues ``execute_async_v3`` on torch's current
CUDA stream, copies the outputs into pinned host tensors, synchronizes and returns them as
NumPy arrays. Inputs outside a
stage's optimization profile (an image larger than the export's ``max_size``, tiles larger
than 64, more tiles per call than ``max_batch``) are refused with a ``ConfigError`` before
TensorRT sees them.

Numerics: ``tensorrt-cuda-fp32`` (the entropy stages are always strict FP32). Float results
depend on the kernels TensorRT picked when it built the plans, so streams are bit-exact only
between codecs using plans from the same build. That holds for exact models too: their
integer-valued stages are exact wherever each convolution is a plain sum of products, but
TensorRT may pick Winograd or FFT tactics, and this has not been checked on a GPU, so this
backend does not claim the ``exact-int24`` numerics; execution contexts are not thread-safe, so
use one backend per thread.

UNTESTED HERE: written against TensorRT 10's documented Python API (name-based tensor API)
on a machine with neither TensorRT nor a GPU; ``tests/export/test_tensorrt.py`` runs it where
both exist. Importing this module never needs TensorRT; constructing the backend does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stcm.errors import ConfigError, EngineError
from stcm.manifest import StageSignature
from stcm.runtime.backends.base import Backend, register


@register("tensorrt")
class TensorRTBackend(Backend):
    """Runs the plans listed in ``manifest["tensorrt"]`` (untested here: no GPU)."""

    name = "tensorrt"

    def __init__(self, folder: str | Path, manifest: dict, gpu: int | None = None):
        self.folder = Path(folder)
        plans = manifest.get("tensorrt")
        if not isinstance(plans, dict) or not plans.get("stages"):
            raise EngineError(f"{self.folder}: this engine has no TensorRT plans; re-export "
                              "with --tensorrt")
        entries = manifest["stages"]
        super().__init__({n: StageSignature.from_dict(n, e) for n, e in entries.items()})
        missing = sorted(set(entries) - set(plans["stages"]))
        if missing:
            raise EngineError(f"{self.folder}: no TensorRT plans for stages {missing}; "
                              "re-export with --tensorrt")
        self.plans = plans
        from stcm.export.tensorrt import import_tensorrt, tensorrt_logger

        self.trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise ConfigError("the tensorrt backend needs a CUDA GPU, and torch sees none; "
                              "use the onnxruntime backend on this machine")
        # ``self.device`` (where outputs live, see Backend) stays the CPU: outputs come back
        # to pinned host tensors. ``self.gpu`` is where the plans run.
        self.gpu = torch.device("cuda", torch.cuda.current_device() if gpu is None
                                else gpu)
        self.logger = tensorrt_logger(self.trt)
        self.runtime = self.trt.Runtime(self.logger)
        # stage -> (engine, context, names of the plan's inputs); created on first use
        self._loaded: dict[str, tuple[object, object, set[str]]] = {}

    @property
    def device_numerics(self) -> str:
        return "tensorrt-cuda-fp32"

    def _built_with(self) -> str:
        device = (self.plans.get("device") or {}).get("name", "an unrecorded GPU")
        return f"TensorRT {self.plans.get('version', '?')} on {device}"

    def _load(self, stage: str):
        loaded = self._loaded.get(stage)
        if loaded is not None:
            return loaded
        trt = self.trt
        entry = self.plans["stages"][stage]
        path = self.folder / entry["file"]
        self.logger.take()
        with torch.cuda.device(self.gpu):
            engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise EngineError(
                    f"TensorRT {trt.__version__} cannot load {path.name} (built with "
                    f"{self._built_with()}): plans only load with the TensorRT version and "
                    "GPU they were built for; re-export with --tensorrt on this host. "
                    + "; ".join(self.logger.take()))
            context = engine.create_execution_context()
            if context is None:
                raise EngineError(f"TensorRT could not create an execution context for {stage} "
                                  "(out of GPU memory? export with a smaller max_size): "
                                  + "; ".join(self.logger.take()))
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = {n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        outputs = {n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT}
        sig = self.signatures[stage]
        # TensorRT drops network inputs that no layer reads, so the plan may have fewer.
        if not inputs <= {s.name for s in sig.inputs} or outputs != {s.name for s in sig.outputs}:
            raise EngineError(f"{path.name} has inputs {sorted(inputs)} and outputs "
                              f"{sorted(outputs)}, not those of the manifest; re-export")
        for n in names:
            if engine.get_tensor_dtype(n) != trt.DataType.FLOAT:
                raise EngineError(f"{path.name}: tensor {n} is {engine.get_tensor_dtype(n)}, "
                                  "not float32; re-export")
        self._loaded[stage] = (engine, context, inputs)
        return engine, context, inputs

    def _check_profile(self, stage: str, inputs: tuple[np.ndarray, ...]) -> None:
        profile = self.plans["stages"][stage].get("profile", {})
        for spec, tensor in zip(self.signatures[stage].inputs, inputs):
            if spec.name not in profile:
                continue
            lo, _, hi = profile[spec.name]
            shape = list(tensor.shape)
            if len(shape) != len(lo) or any(not a <= s <= b for s, a, b in zip(shape, lo, hi)):
                raise ConfigError(
                    f"{stage} input {spec.name} has shape {tuple(shape)}, outside the TensorRT "
                    f"profile {tuple(lo)}..{tuple(hi)} the plans were built for (larger "
                    "images need a larger max_size, tiles at most 64 per side and at most "
                    "max_batch per call); use another backend or rebuild the plans")

    def _run(self, stage, inputs):
        if len(inputs) != len(self.signatures[stage].inputs):
            raise ConfigError(f"{stage} takes {len(self.signatures[stage].inputs)} inputs, "
                              f"got {len(inputs)}")
        self._check_profile(stage, inputs)
        _, context, plan_inputs = self._load(stage)
        sig = self.signatures[stage]
        with torch.cuda.device(self.gpu):
            stream = torch.cuda.current_stream(self.gpu)
            device_inputs = []  # kept alive until the stream is synchronized
            for spec, array in zip(sig.inputs, inputs):
                if spec.name not in plan_inputs:
                    continue
                x = torch.from_numpy(np.ascontiguousarray(array, np.float32)).to(self.gpu)
                device_inputs.append(x)
                if not context.set_input_shape(spec.name, tuple(x.shape)):
                    raise EngineError(f"TensorRT refused shape {tuple(x.shape)} for {stage} "
                                      f"input {spec.name}: " + "; ".join(self.logger.take()))
                context.set_tensor_address(spec.name, x.data_ptr())
            device_outputs = []
            for spec in sig.outputs:
                shape = tuple(context.get_tensor_shape(spec.name))
                if any(d < 0 for d in shape):
                    raise EngineError(f"TensorRT could not infer the shape of {stage} output "
                                      f"{spec.name} (got {shape})")
                y = torch.empty(shape, dtype=torch.float32, device=self.gpu)
                device_outputs.append(y)
                context.set_tensor_address(spec.name, y.data_ptr())
            if not context.execute_async_v3(stream.cuda_stream):
                raise EngineError(f"TensorRT failed to run {stage}: "
                                  + "; ".join(self.logger.take()))
            host = []
            for y in device_outputs:
                h = torch.empty(y.shape, dtype=torch.float32, pin_memory=True)
                h.copy_(y, non_blocking=True)
                host.append(h)
            stream.synchronize()
        return tuple(h.numpy() for h in host)
