"""The ONNX operators TensorRT's ONNX parser supports, and a check of exported graphs.

``TENSORRT_ONNX_OPS`` is the "Supported: Y" column of onnx-tensorrt's ``docs/operators.md``
for TensorRT 10.x (default ONNX domain; read from the 10.15 edition), leaving out the
operators ONNX added in opset 23 and later (Attention, RMSNormalization, RotaryEmbedding,
TensorScatter), which TensorRT only parses in recent 10.x releases and our fixed opset
(``stcm.export.onnx.OPSET``) cannot contain. Support of an operator does not imply support
of every attribute or input type (the document lists restrictions, e.g. Resize modes, Reduce
axes as initializers); the parser is the final judge at build time. The test suite exports
every stage of every context variant and asserts ``unsupported_ops`` is empty, so a model
change that introduces, say, ``Einsum`` with an ellipsis still needs a GPU build to be sure,
but one that introduces ``BitShift`` or a custom-domain operator fails on any machine.

Example:
    >>> import onnx
    >>> from onnx import helper
    >>> node = helper.make_node("BitShift", ["a", "b"], ["c"], direction="LEFT")
    >>> graph = helper.make_graph([helper.make_node("Relu", ["x"], ["a"]), node], "g", [], [])
    >>> sorted(unsupported_ops(helper.make_model(graph)))
    ['BitShift']
"""
from __future__ import annotations

from typing import Iterator

import onnx

TENSORRT_ONNX_OPS: frozenset[str] = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan",
    "Atanh", "AveragePool", "BatchNormalization", "BlackmanWindow", "Cast", "CastLike",
    "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv",
    "ConvTranspose", "Cos", "Cosh", "CumSum", "DeformConv", "DepthToSpace",
    "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand",
    "EyeLike", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm",
    "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual",
    "GridSample", "GroupNormalization", "GRU", "HammingWindow", "HannWindow", "HardSigmoid",
    "HardSwish", "Hardmax", "Identity", "If", "ImageScaler", "InstanceNormalization", "IsInf",
    "IsNaN", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax",
    "Loop", "LRN", "LSTM", "LpNormalization", "LpPool", "MatMul", "Max", "MaxPool", "Mean",
    "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul", "Neg", "NonMaxSuppression",
    "NonZero", "Not", "OneHot", "Or", "Pad", "ParametricSoftplus", "Pow", "PRelu",
    "QuantizeLinear", "RandomNormal", "RandomNormalLike", "RandomUniform",
    "RandomUniformLike", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
    "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RNN", "RoiAlign",
    "Round", "ScaledTanh", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape",
    "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus",
    "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh",
    "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where",
    "Xor",
})

# The default ONNX operator set is named "" or "ai.onnx"; any other domain (com.microsoft,
# custom ops) needs a TensorRT plugin, which stcm does not ship.
_DEFAULT_DOMAINS = ("", "ai.onnx")


def _walk(nodes) -> Iterator[onnx.NodeProto]:
    """Every node of ``nodes`` and of the subgraphs in their attributes (If, Loop, Scan)."""
    for node in nodes:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk(attr.g.node)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _walk(sub.node)


def unsupported_ops(model: onnx.ModelProto) -> set[str]:
    """The operators of ``model`` that TensorRT's ONNX parser lacks, looking into subgraphs
    (If, Loop, Scan) and the bodies of model-local functions (which the parser inlines).

    Operators outside the default domain are reported as ``"domain::OpType"``.
    """
    functions = {(f.domain, f.name): f for f in model.functions}
    found: set[str] = set()
    seen: set[tuple[str, str]] = set()

    def visit(nodes) -> None:
        for node in _walk(nodes):
            key = (node.domain, node.op_type)
            if key in functions:
                if key not in seen:
                    seen.add(key)
                    visit(functions[key].node)
            elif node.domain in _DEFAULT_DOMAINS:
                if node.op_type not in TENSORRT_ONNX_OPS:
                    found.add(node.op_type)
            else:
                found.add(f"{node.domain}::{node.op_type}")

    visit(model.graph.node)
    return found
