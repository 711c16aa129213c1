"""The reference backend: the stage modules of ``stcm.export.stages`` in PyTorch."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from stcm.export.stages import build_stages, is_entropy_stage
from stcm.models.codec import STCM
from stcm.errors import ConfigError
from stcm.runtime.backends.base import Backend, register


# The float transforms run channels-last; the entropy stages keep the layout the wavefront's
# column caches are built around.
CHANNELS_LAST = ("analysis", "synthesis")


# A transposed convolution with fewer outputs than this runs as a convolution + pixel shuffle:
# oneDNN's transposed kernels are slow for narrow outputs (g_s's last layer, 96 -> 3 channels:
# 17 -> 7 ms at 512^2 here) and fast for wide ones, which keep them.
SUBPIXEL_MAX_CHANNELS = 16


class SubpixelConvTranspose(nn.Module):
    """A stride-s ConvTranspose2d (padding k//2, output_padding s-1) as one convolution with
    s*s phases of outputs followed by a pixel shuffle: output phase (a, b) is a plain
    correlation of the input with the kernel taps that land on it."""

    def __init__(self, deconv: nn.ConvTranspose2d):
        super().__init__()
        (k, _), (s, _), (p, _) = deconv.kernel_size, deconv.stride, deconv.padding
        if deconv.output_padding != (s - 1, s - 1) or deconv.groups != 1 or p != k // 2:
            raise ValueError(f"no sub-pixel form for {deconv}")
        w = deconv.weight.detach()  # (Cin, Cout, k, k)
        radius = max(abs(e) for a in range(s) for e in _offsets(a, k, s, p))
        weight = w.new_zeros(w.shape[1], s, s, w.shape[0], 2 * radius + 1, 2 * radius + 1)
        for a in range(s):
            for e in _offsets(a, k, s, p):
                for b in range(s):
                    for f in _offsets(b, k, s, p):
                        weight[:, a, b, :, e + radius, f + radius] = \
                            w[:, :, a + p - s * e, b + p - s * f].t()
        self.weight = nn.Parameter(weight.flatten(0, 2), requires_grad=False)
        self.bias = None if deconv.bias is None else nn.Parameter(
            deconv.bias.detach().repeat_interleave(s * s), requires_grad=False)
        self.radius, self.stride = radius, s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(F.conv2d(x, self.weight, self.bias, padding=self.radius),
                               self.stride)


def _offsets(a: int, k: int, s: int, p: int) -> range:
    """Input offsets e feeding output phase a: kernel tap a + p - s*e must lie in [0, k)."""
    return range(-((k - 1 - a - p) // s), (a + p) // s + 1)


def _fast_synthesis(g_s: nn.Module) -> nn.Module:
    """A copy of g_s (either backbone) with its narrow transposed convolutions in sub-pixel
    form; the model's own modules are left as they are."""
    fast = copy.deepcopy(g_s)
    for parent in list(fast.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.ConvTranspose2d) and child.out_channels < SUBPIXEL_MAX_CHANNELS:
                setattr(parent, name, SubpixelConvTranspose(child))
    return fast


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
        stages["synthesis"] = (_fast_synthesis(stages["synthesis"][0]), stages["synthesis"][1])
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
