"""CUDA graphs for the wavefront step: capture the step stage once per input shape set,
then replay it for every anti-diagonal (one launch instead of one per layer).

Follows torch.cuda.graphs' documented recipe: warm up on a side stream, capture with static
input tensors, copy new inputs into them and replay. The outputs are the graph's static
tensors, overwritten by the next replay; the scheduler consumes a step's outputs before it
runs the next one. Untested on this project's machines (no GPU); CPU runs never use it.
"""
from __future__ import annotations

import torch
from torch import nn


class GraphedStage:
    """Wraps a stage module; ``__call__`` replays a captured graph for known shapes."""

    def __init__(self, module: nn.Module, max_graphs: int = 32):
        self.module = module
        self.max_graphs = max_graphs
        self.graphs: dict[tuple, tuple] = {}

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> tuple:
        static_in = [t.clone() for t in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.module(*static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.module(*static_in)
        return graph, static_in, static_out

    @torch.no_grad()
    def __call__(self, *inputs: torch.Tensor):
        key = tuple(tuple(t.shape) for t in inputs)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= self.max_graphs:
                return self.module(*inputs)  # too many shapes: eager is cheaper than capture
            entry = self.graphs[key] = self._capture(inputs)
        graph, static_in, static_out = entry
        for dst, src in zip(static_in, inputs):
            dst.copy_(src)
        graph.replay()
        return static_out
