"""The reference backend: the stage modules of ``stcm.export.stages`` in PyTorch.

The runtime hands it NumPy arrays (CuPy arrays when ``device`` is ``cuda`` and CuPy can run:
``stcm.kernels.select``); it converts them to tensors without copies on the CPU, by DLPack
on the GPU.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from stcm import kernels
from stcm.errors import ConfigError
from stcm.export.stages import build_stages
from stcm.export.subpixel import subpixel_synthesis
from stcm.manifest import is_entropy_stage
from stcm.models.checkpoint import load_checkpoint, model_fingerprint
from stcm.models.codec import STCM
from stcm.runtime.backends.base import Backend, register
from stcm.tables import CodingTables


def load_model(model) -> STCM:
    """A checkpoint path (or an ``STCM``) as a frozen model in eval mode."""
    if not isinstance(model, STCM):
        model, _ = load_checkpoint(model)
    if not model.frozen:  # checkpoints carry pinned tables; older ones do not
        model.freeze()
    return model.eval()


def model_tables(model: STCM) -> CodingTables:
    """A frozen model's coding tables, with its fingerprint as the model id."""
    return CodingTables.from_model(model, model_fingerprint(model))


# The float transforms run channels-last; the entropy stages keep the layout the wavefront's
# column caches are built around.
CHANNELS_LAST = ("analysis", "synthesis")


# A transposed convolution with fewer outputs than this runs as a convolution + pixel shuffle:
# oneDNN's transposed kernels are slow for narrow outputs (g_s's last layer, 96 -> 3 channels:
# 17 -> 7 ms at 512^2 here) and fast for wide ones, which keep them.
SUBPIXEL_MAX_CHANNELS = 16


def _fast_synthesis(g_s: nn.Module) -> nn.Module:
    """A copy of g_s (either backbone) with its narrow transposed convolutions in sub-pixel
    form; the model's own modules are left as they are."""
    return subpixel_synthesis(g_s, SUBPIXEL_MAX_CHANNELS)


@register("torch")
class TorchBackend(Backend):
    """Runs a model's stages eagerly with torch (CPU here; CUDA where available)."""

    name = "torch"

    def __init__(self, model: STCM, device: str = "cpu", cuda_graphs: bool = True):
        if device not in ("cpu", "cuda"):
            raise ConfigError(f"device must be cpu or cuda, got {device!r}")
        self.torch_device = torch.device(device)
        # The runtime's arrays: CuPy on the GPU when it can run, else NumPy (each stage
        # call then copies to the GPU and back).
        self.device = "cuda" if device == "cuda" and kernels.available() else "cpu"
        if self.torch_device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device cuda asked for, but torch sees no CUDA GPU")
        stages = build_stages(model)
        stages["synthesis"] = (_fast_synthesis(stages["synthesis"][0]), stages["synthesis"][1])
        self.modules = {name: module.eval().to(self.torch_device)
                        for name, (module, _) in stages.items()}
        for name in CHANNELS_LAST:
            # oneDNN's (and cuDNN's) fast convolutions want NHWC: measured on this project's
            # CPU, g_s 2.1x and g_a 1.6x faster (small, 1024^2).
            self.modules[name] = self.modules[name].to(memory_format=torch.channels_last)
        if self.torch_device.type == "cuda" and cuda_graphs:
            from stcm.runtime.backends.cuda_graphs import GraphedStage

            for name in self.modules:
                if name.startswith("step_"):
                    self.modules[name] = GraphedStage(self.modules[name])
            self.sliced_steps = False  # one graph per shape: keep the tile's full columns
        super().__init__({name: signature for name, (_, signature) in stages.items()},
                         exact=model.cfg.exact)

    @property
    def device_numerics(self) -> str:
        return f"torch-{self.torch_device.type}-fp32"

    def _pinned_threads(self):
        # One intra-op thread (restored afterwards): float reductions then take the same
        # path whatever the machine's or the caller's thread setting.
        return _one_thread()

    def to_tensor(self, array) -> torch.Tensor:
        """A runtime array as a tensor on this backend's torch device (no copy where the
        memory is already there)."""
        if isinstance(array, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(array)).to(self.torch_device)
        return torch.from_dlpack(array)  # a CuPy array on the GPU

    def from_tensor(self, tensor: torch.Tensor):
        """A tensor as a runtime array of this backend's device."""
        tensor = tensor.detach()
        if self.device == "cuda":
            return kernels.cuda.xp.from_dlpack(tensor.contiguous())
        return tensor.cpu().numpy()

    @torch.no_grad()
    def _run(self, stage, inputs):
        inputs = tuple(self.to_tensor(a) for a in inputs)
        if stage in CHANNELS_LAST:
            inputs = tuple(t.contiguous(memory_format=torch.channels_last) for t in inputs)
        with self._numerics(stage):
            out = self.modules[stage](*inputs)
        out = out if isinstance(out, tuple) else (out,)
        return tuple(self.from_tensor(t.contiguous()) for t in out)

    @contextlib.contextmanager
    def _numerics(self, stage: str):
        """On CUDA, for the duration of one stage call (the process's settings are restored
        after): no TF32, and deterministic cuDNN algorithms (benchmark mode may pick another
        per run), so the entropy stages compute the same floats every time; for exact
        entropy stages no cuDNN at all, which may pick Winograd or FFT convolutions that are
        not sums of the exact products (the native im2col + GEMM kernels are). Not yet run
        on a GPU."""
        if self.torch_device.type != "cuda":
            yield
            return
        matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            with torch.backends.cudnn.flags(
                    enabled=not (self.exact and is_entropy_stage(stage)), benchmark=False,
                    deterministic=True, allow_tf32=False):
                yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = matmul_tf32


@contextlib.contextmanager
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
