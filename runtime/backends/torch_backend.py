"""The reference backend: the stage modules of ``stcm.export.stages`` in PyTorch."""
from __future__ import annotations

import torch

from stcm.export.stages import build_stages
from stcm.models.codec import STCM
from stcm.runtime.backends.base import Backend, register


@register("torch")
class TorchBackend(Backend):
    """Runs a model's stages eagerly with torch (CPU here; CUDA where available)."""

    name = "torch"

    def __init__(self, model: STCM):
        stages = build_stages(model)
        self.modules = {name: module.eval() for name, (module, _) in stages.items()}
        super().__init__({name: signature for name, (_, signature) in stages.items()})

    @torch.no_grad()
    def _run(self, stage, inputs):
        out = self.modules[stage](*inputs)
        return out if isinstance(out, tuple) else (out,)
