"""The backend interface and its registry."""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Callable

from stcm.errors import ConfigError
from stcm.runtime.header import EXACT_NUMERICS

BACKENDS: dict[str, Callable[..., "Backend"]] = {}
ALIASES = {"ort": "onnxruntime", "trt": "tensorrt"}


def register(name: str):
    """Class decorator: makes a backend available to ``get_backend(name, ...)``."""
    def wrap(cls):
        BACKENDS[name] = cls
        return cls
    return wrap


def backend_name(name: str) -> str:
    """A backend's registered name, given it or an alias (``ort``, ``trt``)."""
    return ALIASES.get(name, name)


def get_backend(name: str, *args, **kwargs) -> "Backend":
    """Instantiates a registered backend (``torch``, ``onnxruntime``/``ort``,
    ``tensorrt``/``trt``)."""
    name = backend_name(name)
    if name not in BACKENDS:
        # Backends register on import; import the known ones lazily so optional
        # dependencies (onnxruntime, tensorrt) are only needed when asked for.
        import importlib

        modules = {"torch": "torch_backend", "onnxruntime": "ort_backend",
                   "tensorrt": "tensorrt_backend"}
        if name in modules:
            importlib.import_module(f"stcm.runtime.backends.{modules[name]}")
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of torch, onnxruntime (ort), "
                          "tensorrt (trt)")
    return BACKENDS[name](*args, **kwargs)


class Backend(ABC):
    """Runs named stages: float32 arrays in, float32 arrays out, NumPy arrays when
    ``device`` is ``"cpu"``, CuPy arrays when it is ``"cuda"`` (``stcm.kernels.select``).

    Public ``run`` owns the policy (stage lookup, error messages); subclasses fill ``_run``.
    """

    name = "abstract"
    #: where the stages' inputs and outputs live; the scheduler keeps its caches there
    device = "cpu"
    #: the entropy stages are exact integer networks (``ModelConfig.exact``)
    exact = False

    # Wavefront steps of exact models get only the rows around the anti-diagonal's positions
    # (a varying row count per call; runtime/wavefront.py). Off where each new shape costs a
    # capture.
    sliced_steps = True

    @property
    def runs_int8_synthesis(self) -> bool:
        """True when this backend runs an engine's int8 g_s (``synthesis_int8``, onnxruntime's
        CPU operators) where it has one: only the onnxruntime backend on the CPU."""
        return False

    @property
    def batch_invariant(self) -> bool:
        """True when results do not depend on how many tiles one call holds."""
        return self.exact

    @property
    def device_numerics(self) -> str:
        return f"{self.name}-cpu-fp32"

    @property
    def numerics(self) -> str:
        """Names the arithmetic of the entropy stages. Streams record it: float stages are
        only bit-exact against the same backend and device; exact ones against any."""
        return EXACT_NUMERICS if self.exact else self.device_numerics

    def __init__(self, signatures: dict, exact: bool = False):
        #: stage name -> ``stcm.export.stages.StageSignature``
        self.signatures = signatures
        self.stages = set(signatures)
        self.exact = exact
        #: a ``runtime.profile.Recorder`` timing every stage call, or None
        self.recorder = None

    #: pin the entropy path to one thread: None for float models only (their rule, see
    #: scheduler.py); True also for exact ones (benchmarks/exact_cost.py measures that)
    pin_entropy: bool | None = None

    def entropy_threads(self):
        """A context in which the entropy stages run pinned when ``pin_entropy`` says so (by
        default: float models, whose floats then do not depend on the machine's or the
        caller's thread setting). Backends that fix their entropy stages' threads
        themselves need nothing here."""
        pin = (not self.exact) if self.pin_entropy is None else self.pin_entropy
        return self._pinned_threads() if pin else contextlib.nullcontext()

    def _pinned_threads(self):
        return contextlib.nullcontext()

    def run(self, stage: str, *inputs) -> tuple:
        if stage not in self.stages:
            raise ConfigError(f"the {self.name} backend has no stage {stage!r}; is the engine "
                              "exported from a model with this context variant?")
        if self.recorder is None:
            return self._run(stage, inputs)
        with self.recorder.span(stage, "stage"):
            return self._run(stage, inputs)

    @abstractmethod
    def _run(self, stage: str, inputs: tuple) -> tuple:
        """Runs one stage."""
