"""Every exported stage of every model variant uses only operators TensorRT's ONNX parser
supports, at the fixed opset (runs without TensorRT: the list is data)."""
import onnx
import pytest
import torch
from onnx import helper

from stcm.export.onnx import OPSET, export_engine
from stcm.export.operators import TENSORRT_ONNX_OPS, unsupported_ops
from stcm.models.codec import STCM
from stcm.config import CONTEXTS, get_config

# The four spatial contexts, attention blocks (ELIC's, whose Sigmoid/Mul the tiny preset
# otherwise lacks) and the HL backbone; "elic" itself takes too long to export in a unit test.
VARIANTS = [{"context": c} for c in CONTEXTS] + [{"attention": True}, {"backbone": "hl"}]


def _ops(model: onnx.ModelProto) -> set[str]:
    return {node.op_type for node in model.graph.node}


@pytest.mark.parametrize("overrides", VARIANTS,
                         ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_exported_graphs_use_only_tensorrt_operators_at_the_fixed_opset(overrides, tmp_path):
    torch.manual_seed(0)
    export_engine(STCM(get_config("tiny", **overrides)), tmp_path / "engine", progress=False)
    files = sorted((tmp_path / "engine").glob("*.onnx"))
    assert len(files) >= 6
    used = set()
    for path in files:
        model = onnx.load(str(path))
        assert unsupported_ops(model) == set(), path.name
        opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
        assert opsets == {"ai.onnx": OPSET}, (path.name, opsets)
        used |= _ops(model)
    assert {"Conv", "ConvTranspose", "Relu"} <= used
    if overrides.get("attention"):
        assert "Sigmoid" in used  # the attention path really was exported and checked


def test_unsupported_ops_looks_into_subgraphs_functions_and_other_domains():
    then = helper.make_graph([helper.make_node("BitShift", ["a", "b"], ["c"], direction="LEFT")],
                             "then", [], [])
    other = helper.make_graph([helper.make_node("Relu", ["a"], ["c"])], "else", [], [])
    graph = helper.make_graph([
        helper.make_node("If", ["cond"], ["c"], then_branch=then, else_branch=other),
        helper.make_node("QuickGelu", ["x"], ["y"], domain="com.microsoft"),
        helper.make_node("Block", ["x"], ["z"], domain="local"),
        helper.make_node("Conv", ["x", "w"], ["v"]),
    ], "g", [], [])
    block = helper.make_function("local", "Block", ["x"], ["z"],
                                 [helper.make_node("Unique", ["x"], ["z"])],
                                 [helper.make_opsetid("", OPSET)])
    model = helper.make_model(graph, functions=[block])
    assert unsupported_ops(model) == {"BitShift", "com.microsoft::QuickGelu", "Unique"}


def test_operator_list_is_plain_names():
    assert all(op.isidentifier() and op[0].isupper() for op in TENSORRT_ONNX_OPS)
    assert {"Conv", "ConvTranspose", "Sigmoid", "Slice", "Range", "Gather"} <= TENSORRT_ONNX_OPS
    assert not {"BitShift", "Unique", "ConvInteger"} & TENSORRT_ONNX_OPS
