"""An int8 synthesis transform for the onnxruntime CPU path (``stcm export --int8-synthesis``).

g_s is not part of the exact entropy path: its precision changes decoded pixels, never a
latent, a stream or a temporal reference. Quantized statically with onnxruntime (QDQ,
per-channel int8 weights, uint8 activations calibrated on latents of the bundled 8-bit sample),
its convolutions run as int8 kernels (VNNI where the CPU has it). onnxruntime quantizes
convolutions but not transposed ones, so g_s is exported in sub-pixel form first
(``export.subpixel``: the same function). The first and last layers stay float (cheap, at
the latent's and the output's ends). The graph is stored as onnxruntime's fused quantized
operators in channels-last layout (``_channels_last``), so it is for onnxruntime's CPU
provider: left to itself, onnxruntime runs the convolutions channels-last but the residual
adds channels-first, with 50 transposes between them. 8-bit activations cost 16-bit images
up to 0.4 dB where 8-bit ones lose ~0.1 (measured), so the runtime runs this graph for 8-bit
images only.

Speed and the rate-distortion cost are measured by ``benchmarks/int8_synthesis.py``
(docs/performance.md).
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
import rasterio
import torch
from onnx import helper

from stcm import SAMPLES_DIR
from stcm.bands import normalize, to_band_groups
from stcm.export.subpixel import subpixel_synthesis
from stcm.manifest import StageSignature
from stcm.models.codec import STCM, pad_image

CALIBRATION_QUALITIES = (0.0, 0.25, 0.5, 0.75, 1.0)
CALIBRATION_CROP = 16  # latent positions (256 pixels) a calibration input
CALIBRATION_CROPS = 8  # per image, band group and quality
# Activation ranges cover this percentile of the calibration values, not their extremes:
# measured on val/test 8-bit crops against min/max, 25 % less PSNR lost at quality 0.5-1
# (99.99: one scene better, the other worse; 99.9: up to 0.38 dB lost).
CALIBRATION_PERCENTILE = 99.999


def calibration_latents(model: STCM, images: list[np.ndarray] | None = None,
                        seed: int = 0) -> list[np.ndarray]:
    """Decoded-latent crops (1, M, 16, 16) for calibration: each band group of ``images``
    ((bands, H, W) at least 256 pixels each way; None: the bundled 8-bit samples, the only
    images this graph decodes) through g_a, at every calibration quality, rounded and
    de-gained as the decoder's latent is (the predicted mean's offset left out)."""
    if images is None:
        images = []
        for path in sorted(SAMPLES_DIR.glob("*.tif")):
            with rasterio.open(path) as src:
                if src.dtypes[0] == "uint8":
                    images.append(src.read())
    rng = np.random.default_rng(seed)
    out = []
    with torch.no_grad():
        for image in images:
            x, _ = normalize(image)
            for group in to_band_groups(x):
                y = model.g_a(pad_image(torch.from_numpy(group[None])))
                for q in CALIBRATION_QUALITIES:
                    gain_enc, gain_dec = model.gain.gains(torch.tensor([q]))
                    latent = (torch.round(y * gain_enc) * gain_dec).numpy()
                    h, w = latent.shape[-2:]
                    size = CALIBRATION_CROP  # one shape: the percentile calibrator stacks them
                    for _ in range(CALIBRATION_CROPS):
                        r, c = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
                        out.append(np.ascontiguousarray(latent[:, :, r: r + size, c: c + size]))
    return out


def _float_layers(graph: onnx.GraphProto) -> list[str]:
    """Names of the nodes kept in float: the first convolution (it reads the latent, whose
    range spans every quality: 8 bits for it cost the most, measured) and the nodes from the
    last convolution to the output (a quantized output would have 256 levels)."""
    producers = {o: n for n in graph.node for o in n.output}
    first = next(n for n in graph.node if n.op_type == "Conv")
    node, names = producers[graph.output[0].name], [first.name]
    while True:
        names.append(node.name)
        if node.op_type == "Conv":
            return names
        node = producers[node.input[0]]


# The quantized operators' activation inputs (the others are scales, zero points, weights).
# QLinearConv runs channels-last as com.microsoft's operator; the rest are element-wise.
_CHANNELS_LAST_INPUTS = {"QLinearConv": (0,), "QLinearAdd": (0, 3), "QLinearMul": (0, 3),
                         "QLinearSigmoid": (0,)}


def _channels_last(src: Path, dst: Path) -> None:
    """Writes ``src`` (a QDQ graph) as onnxruntime's quantized operators with every
    activation between them channels-last (NHWC): its QLinearConv as com.microsoft's with
    ``channels_last=1``, the element-wise QLinearAdd/Mul/Sigmoid on NHWC tensors, and a
    Transpose only where a channels-first operator (DepthToSpace, the float ends) meets them:
    8 transposes where onnxruntime's own layout pass leaves 50 (it moves the convolutions
    but not the adds). The same integer kernels, so the same outputs bit for bit (tested);
    g_s 1.02-1.08x faster (docs/performance.md). The first step is onnxruntime's own
    QDQ -> QLinear fusion (its 'extended' level, no hardware-specific operators)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        fused = Path(tmp) / "fused.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(fused)
        ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(fused))
    graph = model.graph
    layout = {i.name: "nchw" for i in graph.input}
    constants = {i.name for i in graph.initializer}
    nodes, transposed = [], {}

    def as_layout(name: str, want: str) -> str:
        if not name or name in constants or layout.get(name, want) == want:
            return name
        if (name, want) not in transposed:
            out = f"{name}_{want}"
            perm = [0, 2, 3, 1] if want == "nhwc" else [0, 3, 1, 2]
            nodes.append(helper.make_node("Transpose", [name], [out], perm=perm))
            layout[out] = want
            transposed[name, want] = out
        return transposed[name, want]

    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        inputs = list(node.input)
        quantized = node.op_type in _CHANNELS_LAST_INPUTS and node.domain in ("", "com.microsoft")
        if quantized:
            for k in _CHANNELS_LAST_INPUTS[node.op_type]:
                inputs[k] = as_layout(inputs[k], "nhwc")
            domain = "com.microsoft"
            if node.op_type == "QLinearConv":
                attrs["channels_last"] = 1
        else:
            inputs = [as_layout(i, "nchw") for i in inputs]
            domain = node.domain
        nodes.append(helper.make_node(node.op_type, inputs, list(node.output), name=node.name,
                                      domain=domain, **attrs))
        for out in node.output:
            layout[out] = "nhwc" if quantized else "nchw"
    if any(layout[o.name] != "nchw" for o in graph.output):
        raise RuntimeError("the int8 g_s ends in a quantized operator")  # _float_layers keeps it float
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # shapes inferred for the channels-first graph
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst))


def _calibration_reader(name: str, inputs: list[np.ndarray]):
    """onnxruntime's calibration reader feeding ``inputs`` one by one as input ``name``."""
    from onnxruntime.quantization import CalibrationDataReader  # export-time only

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(inputs)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {name: item}

    return Reader()


def quantize_synthesis(model: STCM, signature: StageSignature, path: Path,
                       latents: list[np.ndarray]) -> None:
    """Writes g_s in sub-pixel form, quantized to int8 on ``latents``, to ``path``."""
    # onnxruntime.quantization is only needed here, not on the decode path.
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from stcm.export.onnx import export_stage

    with tempfile.TemporaryDirectory() as tmp:
        fp32, prepared = Path(tmp) / "subpixel.onnx", Path(tmp) / "prepared.onnx"
        qdq = Path(tmp) / "qdq.onnx"
        with torch.no_grad():
            export_stage(subpixel_synthesis(model.g_s).eval(), signature, fp32)
        logger = logging.getLogger()  # the quantizer logs its choices at INFO/WARNING
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            quant_pre_process(str(fp32), str(prepared))
            keep_float = _float_layers(onnx.load(str(prepared)).graph)
            with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its ranges
                reader = _calibration_reader(signature.inputs[0].name, latents)
                quantize_static(str(prepared), str(qdq), reader, quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, nodes_to_exclude=keep_float,
                                calibrate_method=CalibrationMethod.Percentile,
                                extra_options={"CalibPercentile": CALIBRATION_PERCENTILE})
        finally:
            logger.setLevel(level)
        _channels_last(qdq, path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
