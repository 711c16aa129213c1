"""Timing spans of coding runs, for ``stcm bench`` and Chrome/Perfetto traces.

A ``Recorder`` attached to a codec (``Codec.recorder``) receives one span per stage call
(``cat="stage"``), per ANS pass of a step (``"ans"``), per decode step (``"step"``), for z
coding and for the container (``"ans"``, ``"container"``), per band group's latent
refinement (``"refine"``, with ``refine`` > 0) and one around each whole
``"encode"``/``"decode"``. Without a recorder the hooks cost one attribute test.

    recorder = Recorder()
    codec.recorder = recorder
    codec.decompress(data)
    json.dump(recorder.chrome_trace(), open("decode.json", "w"))   # chrome://tracing, Perfetto
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator


@dataclass
class Span:
    name: str
    cat: str
    start_ns: int  # since the recorder's creation
    dur_ns: int
    args: dict = field(default_factory=dict)


class Recorder:
    """Collects spans. ``sync`` (e.g. ``torch.cuda.synchronize``) runs before a span closes,
    so asynchronous GPU work is charged to the span that launched it."""

    def __init__(self, sync: Callable[[], None] | None = None):
        self.spans: list[Span] = []
        self.sync = sync
        self._t0 = time.perf_counter_ns()

    @contextlib.contextmanager
    def span(self, name: str, cat: str, **args) -> Iterator[None]:
        start = time.perf_counter_ns()
        try:
            yield
        finally:
            if self.sync is not None:
                self.sync()
            end = time.perf_counter_ns()
            self.spans.append(Span(name, cat, start - self._t0, end - start, args))

    def clear(self) -> None:
        self.spans.clear()

    def chrome_trace(self, pid: int = 1, process_name: str = "stcm") -> dict:
        """The spans in the Trace Event Format (complete events, microseconds), nested by
        time on one thread, as chrome://tracing and ui.perfetto.dev read it."""
        events = [{"name": "process_name", "ph": "M", "pid": pid, "tid": 1,
                   "args": {"name": process_name}}]
        for s in sorted(self.spans, key=lambda s: (s.start_ns, -s.dur_ns)):
            events.append({"name": s.name, "cat": s.cat, "ph": "X", "pid": pid, "tid": 1,
                           "ts": s.start_ns / 1000, "dur": s.dur_ns / 1000, "args": s.args})
        return {"traceEvents": events, "displayTimeUnit": "ms"}


def span(recorder: Recorder | None, name: str, cat: str, **args):
    """``recorder.span(...)``, or a no-op without a recorder."""
    return recorder.span(name, cat, **args) if recorder is not None else contextlib.nullcontext()
