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
from onnx import helper, numpy_helper

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
    ``channels_last=1``, the element-wise QLinearAdd/Mul/Sigmoid on NHWC tensors, a
    quantized convolution's pixel shuffle as its phases' convolutions (``_phase_shuffle``),
    and a Transpose only where a channels-first operator (the float ends) meets them: 2 to 4
    transposes where onnxruntime's own layout pass leaves 50 (it moves the convolutions but
    not the adds). The same integer products, so the same outputs bit for bit (tested); g_s
    1.02-1.08x faster for the layout, 1.25-1.46x for the phases (docs/performance.md). The
    first step is onnxruntime's own QDQ -> QLinear fusion (its 'extended' level, no
    hardware-specific operators)."""
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

    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    weights = {i.name: i for i in graph.initializer}
    convs: dict[str, onnx.NodeProto] = {}  # channels-last QLinearConvs by output
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        inputs = list(node.input)
        quantized = node.op_type in _CHANNELS_LAST_INPUTS and node.domain in ("", "com.microsoft")
        shuffle = (node.op_type == "DepthToSpace" and node.input[0] in convs
                   and readers[node.input[0]] == 1 and attrs.get("mode", b"DCR") == b"CRD")
        phases = shuffle and _phase_shuffle(convs[node.input[0]], attrs["blocksize"], weights,
                                            node.output[0])
        if phases:  # the convolution's phases write the shuffled NHWC tensor
            at = next(k for k, n in enumerate(nodes) if n is convs[node.input[0]])
            nodes[at: at + 1], added = phases
            graph.initializer.extend(added)
            layout[node.output[0]] = "nhwc"
            continue
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
        if node.op_type == "QLinearConv" and quantized:
            convs[node.output[0]] = nodes[-1]
        for out in node.output:
            layout[out] = "nhwc" if quantized else "nchw"
    if any(layout[o.name] != "nchw" for o in graph.output):
        raise RuntimeError("the int8 g_s ends in a quantized operator")  # _float_layers keeps it float
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]  # the phases' weights replace some
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]  # shapes inferred for the channels-first graph
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst))


def _phase_shuffle(conv: onnx.NodeProto, block: int, weights: dict, out: str
                   ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]] | None:
    """A channels-last QLinearConv followed by a pixel shuffle (DepthToSpace, CRD: channel
    c * b * b + i * b + j goes to phase (i, j)), as one QLinearConv per phase with only the
    kernel rows and columns that phase reads, then the shuffle in NHWC (a reshape, one
    transpose of channel blocks, a reshape) written to ``out``.

    A sub-pixel transposed convolution (``export.subpixel``) leaves most phases' kernels
    with zero border taps: a 5x5 stride-2 one's 3x3 kernel has 25 of its 36 taps per input
    channel non-zero, the rest are products with zero. Cropping a zero tap (weight zero point
    0) and the padding under it drops only zero terms of the integer sums, and each phase
    keeps its channels' weights, scales and bias: the same outputs bit for bit (tested).
    None where that does not hold (grouped, or weight zero points not 0): the caller then
    shuffles channels-first."""
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    inputs = list(conv.input)
    w = numpy_helper.to_array(weights[inputs[3]])
    scale, zero = (numpy_helper.to_array(weights[inputs[k]]) for k in (4, 5))
    bias = numpy_helper.to_array(weights[inputs[8]]) if len(inputs) > 8 else None
    if np.any(zero != 0) or attrs.get("group", 1) != 1 or w.shape[0] % (block * block):
        return None
    n, (kh, kw) = w.shape[0] // (block * block), w.shape[2:]
    top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
    base = conv.output[0]
    nodes, constants, phases = [], [], []
    for i in range(block):
        for j in range(block):
            pick = np.arange(n) * block * block + i * block + j
            taps = np.abs(w[pick].astype(np.int32))
            rows, cols = np.nonzero(taps.sum((0, 1, 3)))[0], np.nonzero(taps.sum((0, 1, 2)))[0]
            # crop zero rows and columns, never more than the padding under them
            r0 = min(rows[0], top) if rows.size else 0
            r1 = max(rows[-1], kh - 1 - bottom) if rows.size else kh - 1
            c0 = min(cols[0], left) if cols.size else 0
            c1 = max(cols[-1], kw - 1 - right) if cols.size else kw - 1
            name = f"{base}_phase{i}{j}"
            phase = {3: w[pick, :, r0: r1 + 1, c0: c1 + 1]}
            if scale.ndim:
                phase[4] = scale[pick]
            if zero.ndim:
                phase[5] = zero[pick]
            if bias is not None:
                phase[8] = bias[pick]
            ins = list(inputs)
            for k, value in phase.items():
                ins[k] = f"{name}_{k}"
                constants.append(numpy_helper.from_array(np.ascontiguousarray(value), ins[k]))
            nodes.append(helper.make_node(
                "QLinearConv", ins, [name], name=name, domain="com.microsoft",
                **{**attrs, "kernel_shape": [int(r1 - r0 + 1), int(c1 - c0 + 1)],
                   "pads": [int(top - r0), int(left - c0), int(bottom - (kh - 1 - r1)),
                            int(right - (kw - 1 - c1))]}))
            phases.append(name)
    # (1, H, W, b*b*n) in phase order -> (1, H, W, b, b*n) -> (1, H, b, W, b*n) -> (1, bH, bW, n)
    split, grow, width = (f"{base}_{s}" for s in ("split", "grow", "channels"))
    constants += [numpy_helper.from_array(np.array([0, 0, 0, block, -1], np.int64), split),
                  numpy_helper.from_array(np.array([1, block, block], np.int64), grow),
                  numpy_helper.from_array(np.array([n], np.int64), width)]
    nodes += [helper.make_node("Concat", phases, [f"{base}_phases"], axis=3),
              helper.make_node("Reshape", [f"{base}_phases", split], [f"{base}_5d"]),
              helper.make_node("Transpose", [f"{base}_5d"], [f"{base}_moved"], perm=[0, 1, 3, 2, 4]),
              helper.make_node("Shape", [inputs[0]], [f"{base}_in"], start=0, end=3),
              helper.make_node("Mul", [f"{base}_in", grow], [f"{base}_hw"]),
              helper.make_node("Concat", [f"{base}_hw", width], [f"{base}_shape"], axis=0),
              helper.make_node("Reshape", [f"{base}_moved", f"{base}_shape"], [out])]
    return nodes, constants


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
            # onnxruntime's symbolic shape inference fails on the hl backbone's Haar merge
            # (and leaves temporary files in the working directory); ONNX's own shape
            # inference is all the quantizer needs (the elic backbone's int8 graph is the same).
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
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
