"""The reference backend: the stage modules of ``stcm.export.stages`` in PyTorch."""
from __future__ import annotations

import torch

from stcm.export.stages import build_stages, is_entropy_stage
from stcm.models.codec import STCM
from stcm.errors import ConfigError
from stcm.runtime.backends.base import Backend, register


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
        if self.exact and self.device.type == "cuda" and is_entropy_stage(stage):
            # cuDNN may pick Winograd or FFT convolutions, which are not sums of the exact
            # products; the native kernels (im2col + GEMM, TF32 off) are. Not yet run on a GPU.
            with torch.backends.cudnn.flags(enabled=False):
                out = self.modules[stage](*inputs)
        else:
            out = self.modules[stage](*inputs)
        return out if isinstance(out, tuple) else (out,)
