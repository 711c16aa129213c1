"""The onnxruntime backend: runs an engine's ONNX stages (CPU here; the CUDA execution
provider where onnxruntime-gpu is installed and ``device="cuda"`` asks for it).

It imports neither torch nor ``stcm.models``: NumPy arrays in and out (with the CUDA
provider too: inputs and outputs cross to the host by IO binding)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from stcm.errors import ConfigError
from stcm.manifest import StageSignature, is_entropy_stage
from stcm.runtime.backends.base import Backend, register

# CUDA EP settings for exact stages: no TF32, and cuDNN's default algorithm (implicit GEMM,
# a plain sum of the exact products) instead of a search that may pick Winograd or FFT.
_CUDA_EXACT = {"use_tf32": "0", "cudnn_conv_algo_search": "DEFAULT"}


# A step graph this large on disk (its weights, ~0.8 M parameters) is wide enough for two
# threads to pay on a one-tile call: the built-in model's last group (0.9 M), elic's last two.
WIDE_STEP_BYTES = 3 << 20

DEVICE_PROVIDERS = {"cpu": ["CPUExecutionProvider"],
                    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def _providers(requested: list[str] | None, device: str) -> list[str]:
    available = ort.get_available_providers()
    if requested:
        return [p for p in requested if p in available] or ["CPUExecutionProvider"]
    if device not in DEVICE_PROVIDERS:
        raise ConfigError(f"device must be one of {sorted(DEVICE_PROVIDERS)}, got {device!r}")
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise ConfigError("device cuda asked for, but this onnxruntime has no CUDA execution "
                          f"provider (it has {', '.join(available)}); install onnxruntime-gpu")
    return [p for p in DEVICE_PROVIDERS[device] if p in available]


@register("onnxruntime")
class OrtBackend(Backend):
    """One InferenceSession per stage, created on first use.

    Args:
        folder, manifest: the engine directory and its verified manifest.
        providers: onnxruntime execution providers, in order of preference (None: those of
            ``device``); unavailable ones are dropped.
        threads: intra-op threads of the float transforms (None: onnxruntime's default).
        device: ``cpu`` or ``cuda`` (the CUDA execution provider; refused when missing).
    """

    name = "onnxruntime"
    #: one-tile calls of wide step graphs run on ``threads`` (see ``_threads``)
    wide_step_threads = True

    def __init__(self, folder: Path, manifest: dict, providers: list[str] | None = None,
                 threads: int | None = None, device: str = "cpu"):
        self.folder = Path(folder)
        self.entries = manifest["stages"]
        super().__init__({n: StageSignature.from_dict(n, e) for n, e in self.entries.items()},
                         exact=bool(manifest["config"].get("exact", False)))
        self.providers = _providers(providers, device)
        self.threads = threads
        self.sessions: dict[tuple[str, int, bool], ort.InferenceSession] = {}
        self._wide_stages: dict[str, bool] = {}
        self.output_names = {n: [o["name"] for o in e["outputs"]] for n, e in self.entries.items()}
        self.input_names = {n: [i["name"] for i in e["inputs"]] for n, e in self.entries.items()}

    @property
    def on_cuda(self) -> bool:
        """True when the sessions run under the CUDA execution provider."""
        return "CUDAExecutionProvider" in self.providers

    @property
    def device_numerics(self) -> str:
        return f"onnxruntime-{'cuda' if self.on_cuda else 'cpu'}-fp32"

    @property
    def runs_int8_synthesis(self) -> bool:
        # The int8 graph is com.microsoft's channels-last CPU operators (export/int8.py); under
        # the CUDA provider they would fall back to the CPU between GPU stages.
        return not self.on_cuda

    def _threads(self, stage: str, tiles: int) -> tuple[int, bool]:
        """(intra-op threads, 0 for onnxruntime's default; spin within a call) for a call of
        ``stage`` on ``tiles`` tiles."""
        entropy = is_entropy_stage(stage)
        if entropy and not self.exact:
            # Float entropy stages: one intra-op thread, so their reductions take the same
            # path on every machine and thread setting (see scheduler.py).
            return 1, False
        if stage.startswith("step_") and tiles == 1 and not self.on_cuda:
            # A wavefront step of one tile (<= 64 positions) is ~70-170 small operations:
            # waking a second thread for each costs more than it shares (1024^2, one tile:
            # step graphs 580 -> 490 ms on one thread), while batched calls of several tiles
            # gain from two (2048^2, 8 tiles a call: 2.75-3.17 s on two threads, 3.28-3.71
            # on one) and keep the backend's threads below. Wide groups' steps are a few large
            # GEMMs instead, and split them over the threads if the workers spin within the
            # call (and stop at its end, so they take no core from the stages in between):
            # elic's last group at 1024^2, 1111 -> 760 ms (docs/performance.md, "Threads of
            # the wide steps"). Exact integer sums: the same outputs on any thread count.
            if not (self.wide_step_threads and self._wide(stage)):
                return 1, False
            threads = self.threads or 0
            return threads, threads != 1
        return self.threads or 0, False

    def _wide(self, stage: str) -> bool:
        wide = self._wide_stages.get(stage)
        if wide is None:
            # The graph's size is its weights: the multiply-accumulates of one row.
            size = (self.folder / self.entries[stage]["file"]).stat().st_size
            wide = self._wide_stages[stage] = size >= WIDE_STEP_BYTES
        return wide

    def _session(self, stage: str, threads: int = 0, spin: bool = False
                 ) -> ort.InferenceSession:
        session = self.sessions.get((stage, threads, spin))
        if session is None:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            # Idle intra-op threads would spin between the hundreds of short step calls,
            # taking the cores that the scheduler's own work (and torch) needs meanwhile;
            # where they spin within a call, they stop at its end.
            options.add_session_config_entry("session.intra_op.allow_spinning",
                                             "1" if spin else "0")
            if spin:
                options.add_session_config_entry("session.force_spinning_stop", "1")
            path = self.folder / self.entries[stage]["file"]
            providers = [(p, _CUDA_EXACT) if p == "CUDAExecutionProvider"
                         and is_entropy_stage(stage) and self.exact else p
                         for p in self.providers]
            session = ort.InferenceSession(str(path), options, providers=providers)
            self.sessions[(stage, threads, spin)] = session
        return session

    def _run(self, stage, inputs):
        session = self._session(stage, *self._threads(stage, inputs[0].shape[0]))
        feed = {name: np.ascontiguousarray(a, dtype=np.float32)
                for name, a in zip(self.input_names[stage], inputs)}
        if self.on_cuda:
            # IO binding: inputs are copied to the device once, outputs come back to the host
            # without an extra session-side copy. Untested here (no GPU on this machine).
            binding = session.io_binding()
            for name, array in feed.items():
                binding.bind_cpu_input(name, array)
            for name in self.output_names[stage]:
                binding.bind_output(name, "cpu")
            session.run_with_iobinding(binding)
            outputs = binding.copy_outputs_to_cpu()
        else:
            outputs = session.run(self.output_names[stage], feed)
        return tuple(outputs)
