"""The reference backend: the stage modules of ``stcm.export.stages`` in PyTorch."""
from __future__ import annotations

import torch

from stcm.export.stages import build_stages, is_entropy_stage
from stcm.models.codec import STCM
from stcm.errors import ConfigError
from stcm.runtime.backends.base import Backend, register


# The float transforms run channels-last; the entropy stages keep the layout the wavefront's
# column caches are built around.
CHANNELS_LAST = ("analysis", "synthesis")


@register("torch")
class TorchBackend(Backend):
    """Runs a model's stages eagerly with torch (CPU here; CUDA where available)."""

    name = "torch"

    def __init__(self, model: STCM, device: str = "cpu", cuda_graphs: bool = True):
        self.device = torch.device(device)
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError("device cuda asked for, but torch sees no CUDA GPU")
            # The entropy stages must compute the same floats every time: no TF32, and
            # deterministic cuDNN algorithms (benchmark mode may pick another per run).
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        stages = build_stages(model)
        self.modules = {name: module.eval().to(self.device)
                        for name, (module, _) in stages.items()}
        for name in CHANNELS_LAST:
            # oneDNN's (and cuDNN's) fast convolutions want NHWC: measured on this project's
            # CPU, g_s 2.1x and g_a 1.6x faster (small, 1024^2).
            self.modules[name] = self.modules[name].to(memory_format=torch.channels_last)
        if self.device.type == "cuda" and cuda_graphs:
            from stcm.runtime.backends.cuda_graphs import GraphedStage

            for name in self.modules:
                if name.startswith("step_"):
                    self.modules[name] = GraphedStage(self.modules[name])
        super().__init__({name: signature for name, (_, signature) in stages.items()},
                         exact=model.cfg.exact)

    @property
    def device_numerics(self) -> str:
        return f"torch-{self.device.type}-fp32"

    @torch.no_grad()
    def _run(self, stage, inputs):
        inputs = tuple(t.to(self.device) for t in inputs)
        if stage in CHANNELS_LAST:
            inputs = tuple(t.contiguous(memory_format=torch.channels_last) for t in inputs)
            return (self.modules[stage](*inputs).contiguous(),)
        if self.exact and self.device.type == "cuda" and is_entropy_stage(stage):
            # cuDNN may pick Winograd or FFT convolutions, which are not sums of the exact
            # products; the native kernels (im2col + GEMM, TF32 off) are. Not yet run on a GPU.
            with torch.backends.cudnn.flags(enabled=False):
                out = self.modules[stage](*inputs)
        else:
            out = self.modules[stage](*inputs)
        return out if isinstance(out, tuple) else (out,)
