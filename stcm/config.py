"""Model configuration: one frozen dataclass, named presets, and a JSON round trip.

The configuration is data. It is written into every checkpoint (and later every engine
manifest), so a checkpoint rebuilds its model with no outside knowledge.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from stcm.contexts import CONTEXTS, context_variant
from stcm.errors import ConfigError

# Main transforms (models/transforms.py): ``elic`` (ELIC's strided convolutions and residual
# bottlenecks) or ``hl`` (HL-RSCompNet-style: a Haar split into a low- and a high-frequency
# branch). Both give the same latent contract (M channels at 1/16), so the entropy model,
# wavefront and temporal context do not depend on the choice.
BACKBONES = ("elic", "hl")

# Lagrange multipliers of the trained quality levels, for loss = bpp + lambda * 255^2 * MSE on
# images scaled to [0, 1]. Log-spaced and wider at the top than daily-image codecs use, because
# remote-sensing users ask for high fidelity (the paper trains up to ~46 dB PSNR).
DEFAULT_LAMBDAS = (0.002, 0.0058, 0.0166, 0.048, 0.139, 0.4)
# Scale indexes are one byte on every path.
MAX_SCALE_LEVELS = 256


@dataclass(frozen=True)
class QuantSpec:
    """Bit widths of an exact entropy path (``ModelConfig.quant_spec``; see models/quant.py)."""

    act_bits: int = 10
    weight_bits: int = 8
    mean_bits: int = 6


# Fields added after models were released, with the value that means "feature absent": a
# config leaves them out then, so its JSON, and the model id hashed from it, stay the same.
_ADDED_FIELDS = {"temporal_prediction": False, "latent_shift": False}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one STCM codec.

    Attributes:
        name: Preset name or a user label; informational.
        backbone: Main transform, one of ``BACKBONES``.
        N: Width of the main and hyper transforms (for ``hl``: of its low-frequency branch).
        high_width: Width of the ``hl`` backbone's high-frequency branch (0: N); unused by
            ``elic``.
        M: Latent channels; split into ``groups`` for the channel context (ELIC's uneven groups).
        groups: Channels per group, decoded in order; must sum to ``M``.
        attention: Use simplified attention blocks in g_a/g_s (ELIC); off for CPU latency.
        res_blocks: Residual bottleneck blocks after each of the first three resolution stages.
        context: Spatial context inside a group: ``diag`` (the paper's stacked diagonal masked
            module), ``checkerboard`` (ELIC), ``serial`` (raster order) or ``none``.
        context_layers: Number of stacked masked convolutions (``diag``/``checkerboard``).
        context_residual: Masked residual blocks between the stacked layers (paper Table 4).
        context_kernel: Kernel size of the masked convolutions (odd).
        context_mult: Spatial-context feature width per group, as a multiple of its channels.
        context_max_features: Upper bound on that width (0: none); keeps the widest group's
            per-step cost in check on CPUs.
        channel_context_width: Hidden width of the channel-context convolutions.
        temporal: Temporal context branch on the reference image's latent (paper section 3.3).
        temporal_width: Hidden width of the temporal branch.
        temporal_prediction: Add to each group's means a prediction from the reference: a 3x3
            per-channel convolution of the reference latent at the current image's
            quantisation step (no bias: exactly zero without a reference). The temporal
            branch alone reaches the means through the side projection and two ReLU layers,
            which follow a reference channel by channel only loosely.
        latent_shift: The model carries latent shift tables (``stcm.shift_tables``, fitted by
            ``stcm fit-shift``): a reference a few pixels off this image's grid is moved by
            the remainder of whole latent positions in latent space, exactly, instead of
            moving this image on a padded canvas.
        aggregation_mult: Hidden width of parameter aggregation, a multiple of group channels.
        lambdas: Rate-distortion trade-offs of the trained quality levels, ascending.
        scale_min, scale_max, scale_levels: The fixed log-spaced table of Gaussian scales that
            the entropy coder sees.
        in_channels: Bands per coded image; multispectral data is coded in groups of this many.
        exact: Integer-exact entropy path (docs/determinism.md): streams decode identically
            on every backend, batch size, thread count and device. Checkpoints written
            before this field existed are float models (False).
        exact_act_bits, exact_weight_bits: Bit widths of its activations and weights.
        exact_mean_bits: Means lie on the grid 2^-exact_mean_bits.
    """

    name: str = "custom"
    backbone: str = "elic"
    N: int = 96
    high_width: int = 0
    M: int = 160
    groups: tuple[int, ...] = (8, 8, 16, 32, 96)
    attention: bool = False
    res_blocks: int = 1
    context: str = "diag"
    context_layers: int = 3
    context_residual: bool = True
    context_kernel: int = 5
    context_mult: int = 2
    context_max_features: int = 128
    channel_context_width: int = 64
    temporal: bool = True
    temporal_width: int = 48
    temporal_prediction: bool = False
    latent_shift: bool = False
    aggregation_mult: int = 3
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS
    scale_min: float = 0.11
    scale_max: float = 256.0
    scale_levels: int = 64
    in_channels: int = 3
    exact: bool = True
    exact_act_bits: int = 10
    exact_weight_bits: int = 8
    exact_mean_bits: int = 6
    # Version of the architecture code that the weights belong to; bump on incompatible change.
    arch_version: int = field(default=1)

    def __post_init__(self):
        object.__setattr__(self, "groups", tuple(int(g) for g in self.groups))
        object.__setattr__(self, "lambdas", tuple(float(v) for v in self.lambdas))
        problems = []
        for attr in ("N", "M", "res_blocks", "context_mult", "channel_context_width",
                     "temporal_width", "aggregation_mult", "scale_levels", "in_channels"):
            value = getattr(self, attr)
            if not isinstance(value, int) or value < (0 if attr == "res_blocks" else 1):
                problems.append(f"{attr} must be a positive integer, got {value!r}")
        if isinstance(self.scale_levels, int) and not 2 <= self.scale_levels <= MAX_SCALE_LEVELS:
            problems.append(f"scale_levels must be in 2..{MAX_SCALE_LEVELS}, got "
                            f"{self.scale_levels}")
        if self.backbone not in BACKBONES:
            problems.append(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.backbone == "hl" and self.attention:
            problems.append("attention blocks belong to the elic backbone, not hl")
        if not isinstance(self.high_width, int) or self.high_width < 0:
            problems.append("high_width must be an integer >= 0")
        if not isinstance(self.context_max_features, int) or self.context_max_features < 0:
            problems.append("context_max_features must be an integer >= 0")
        if not self.groups or any(g < 1 for g in self.groups):
            problems.append(f"groups must be positive channel counts, got {self.groups}")
        elif sum(self.groups) != self.M:
            problems.append(f"groups {self.groups} sum to {sum(self.groups)}, not M={self.M}")
        if self.context not in CONTEXTS:
            problems.append(f"context must be one of {CONTEXTS}, got {self.context!r}")
        if self.context_layers < 1:
            problems.append(f"context_layers must be >= 1, got {self.context_layers}")
        variant = context_variant(self.context) if self.context in CONTEXTS else None
        if variant and variant.spatial and not variant.stacked and self.context_layers != 1:
            problems.append(f"the {self.context} context is a single masked layer "
                            "(context_layers=1)")
        if self.context_kernel < 3 or self.context_kernel % 2 == 0:
            problems.append(f"context_kernel must be odd and >= 3, got {self.context_kernel}")
        if not self.lambdas or any(not (v > 0) for v in self.lambdas):
            problems.append(f"lambdas must be positive, got {self.lambdas}")
        elif list(self.lambdas) != sorted(set(self.lambdas)):
            problems.append(f"lambdas must be strictly ascending, got {self.lambdas}")
        if not (0 < self.scale_min < self.scale_max) or not math.isfinite(self.scale_max):
            problems.append("need 0 < scale_min < scale_max < inf")
        if not isinstance(self.temporal_prediction, bool):
            problems.append(f"temporal_prediction must be true or false, got "
                            f"{self.temporal_prediction!r}")
        elif self.temporal_prediction and not self.temporal:
            problems.append("temporal_prediction needs the temporal branch (temporal=true)")
        if not isinstance(self.latent_shift, bool):
            problems.append(f"latent_shift must be true or false, got {self.latent_shift!r}")
        elif self.latent_shift and not (self.temporal and self.exact):
            problems.append("latent_shift needs the temporal branch and an exact model (its "
                            "moved reference must be the same bits on every backend)")
        if not isinstance(self.exact, bool):
            problems.append(f"exact must be true or false, got {self.exact!r}")
        for attr, low, high in (("exact_act_bits", 2, 12), ("exact_weight_bits", 2, 12),
                                ("exact_mean_bits", 0, 12)):
            value = getattr(self, attr)
            if not isinstance(value, int) or not low <= value <= high:
                problems.append(f"{attr} must be an integer in {low}..{high}, got {value!r}")
        if problems:
            raise ConfigError("invalid model config: " + "; ".join(problems))

    def quant_spec(self) -> QuantSpec | None:
        """Bit widths of the exact entropy path; None for a float model."""
        if not self.exact:
            return None
        return QuantSpec(self.exact_act_bits, self.exact_weight_bits, self.exact_mean_bits)

    def context_features(self, k: int) -> int:
        """Width of group k's spatial-context features (0 without a spatial context)."""
        if not context_variant(self.context).spatial:
            return 0
        width = self.context_mult * self.groups[k]
        return min(width, self.context_max_features) if self.context_max_features else width

    @property
    def high_features(self) -> int:
        """Width of the ``hl`` backbone's high-frequency branch."""
        return self.high_width or self.N

    @property
    def transform_reach(self) -> int:
        """How far g_a and g_s reach, in pixels: a latent position depends only on pixels
        within this distance of its 16x16 cell, and a pixel only on the latent positions
        whose cells lie within it. Summed over the layers (models/transforms.py): a 5x5
        stride-2 convolution on a grid of s pixels reaches s, a residual bottleneck (one
        3x3) s, an attention block (three bottlenecks deep) 3s, a 3x3 convolution s, the
        Haar split or merge 1. tests/models/test_transforms.py checks it against the
        measured receptive field of every preset."""
        b = self.res_blocks
        if self.backbone == "elic":
            # strided stages at 1 (or 16), 2, 4, 8 px; bottlenecks between them at 2, 4, 8;
            # attention at 16 and 4 px (g_s; g_a mirrors it at 4 and 16).
            return (2 + 4 + 8 + 16) + b * (2 + 4 + 8) + (3 * (16 + 4) if self.attention else 0)
        # hl: the Haar step, strided stages at 2, 4, 8 px with bottlenecks at 4, 8, 16, and
        # the 3x3 fusion at 16.
        return 1 + (4 + 8 + 16) + b * (4 + 8 + 16) + 16

    @property
    def transform_halo(self) -> int:
        """``transform_reach`` in whole latent positions: the halo with which blocks of g_a
        and g_s give the whole transform's values (runtime/blocks.py)."""
        return -(-self.transform_reach // 16)

    @property
    def num_qualities(self) -> int:
        return len(self.lambdas)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        for name, off in _ADDED_FIELDS.items():
            if data[name] == off:  # models without the feature keep their config and id
                del data[name]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"model config must be a JSON object, got {type(data).__name__}")
        if "exact" not in data:  # written before the exact path existed: a float model
            data = {**data, "exact": False}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config fields {unknown}; written by a newer stcm?")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"invalid model config: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"model config is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, ModelConfig] = {
    # For tests and smoke runs: trains a step in well under a second on a 64x64 crop.
    "tiny": ModelConfig(
        name="tiny", N=24, M=32, groups=(4, 4, 8, 16), res_blocks=1, channel_context_width=16,
        temporal_width=16, aggregation_mult=2,
    ),
    # The CPU-latency default: fewer channels than ELIC, no attention.
    "small": ModelConfig(name="small"),
    # Paper size (ELIC's main transform): N=192, M=320, groups 16,16,32,64,192, attention.
    "elic": ModelConfig(
        name="elic", N=192, M=320, groups=(16, 16, 32, 64, 192), attention=True, res_blocks=3,
        channel_context_width=224, temporal_width=192, context_max_features=0,
    ),
    # HL-RSCompNet-style main transform (paper ref [44]) with small's entropy model, so it
    # can start from small's hyperprior and context weights; 40 % of small's transform MACs
    # (12.3k vs 31.1k per pixel for g_a: its strided stages start at half resolution).
    "hl-small": ModelConfig(name="hl-small", backbone="hl", high_width=64),
    # The paper's size: ELIC's latent and context widths around the HL transform.
    "hl": ModelConfig(
        name="hl", backbone="hl", N=192, M=320, high_width=128, groups=(16, 16, 32, 64, 192),
        channel_context_width=224, temporal_width=192, context_max_features=0,
    ),
}


def get_config(name: str, **overrides) -> ModelConfig:
    """Returns the preset ``name`` (``tiny``, ``small``, ``elic``, ``hl-small``, ``hl``) with
    ``overrides`` applied.

    Example:
        >>> cfg = get_config("tiny", context="checkerboard")
        >>> cfg.context, cfg.M
        ('checkerboard', 32)
    """
    try:
        base = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}") from None
    context = overrides.get("context")
    variant = context_variant(context) if context in CONTEXTS else None
    if (variant and variant.spatial and not variant.stacked
            and "context_layers" not in overrides):
        overrides["context_layers"] = 1  # a single-layer variant (serial) by definition
    return base.replace(**overrides) if overrides else base
