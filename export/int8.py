"""An int8 synthesis transform for the onnxruntime CPU path (``stcm export --int8-synthesis``).

g_s is not part of the exact entropy path: its precision changes decoded pixels, never a
latent, a stream or a temporal reference. Quantized statically with onnxruntime (QDQ,
per-channel int8 weights, uint8 activations calibrated on latents of the bundled 8-bit sample),
its convolutions run as int8 kernels (AVX-512 VNNI here). onnxruntime quantizes
convolutions but not transposed ones, so g_s is exported in sub-pixel form first
(``export.subpixel``: the same function). The first and last layers stay float (cheap, at
the latent's and the output's ends). 8-bit activations cost 16-bit images up to 0.4 dB where
8-bit ones lose ~0.1 (measured), so the runtime runs this graph for 8-bit images only.

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


def quantize_synthesis(model: STCM, signature: StageSignature, path: Path,
                       latents: list[np.ndarray]) -> None:
    """Writes g_s in sub-pixel form, quantized to int8 on ``latents``, to ``path``."""
    # onnxruntime.quantization is only needed here, not on the decode path.
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                          QuantFormat, QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from stcm.export.onnx import export_stage

    name = signature.inputs[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(latents)

        def get_next(self):
            latent = next(self.items, None)
            return None if latent is None else {name: latent}

    with tempfile.TemporaryDirectory() as tmp:
        fp32, prepared = Path(tmp) / "subpixel.onnx", Path(tmp) / "prepared.onnx"
        with torch.no_grad():
            export_stage(subpixel_synthesis(model.g_s).eval(), signature, fp32)
        logger = logging.getLogger()  # the quantizer logs its choices at INFO/WARNING
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            quant_pre_process(str(fp32), str(prepared))
            keep_float = _float_layers(onnx.load(str(prepared)).graph)
            with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its ranges
                quantize_static(str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, nodes_to_exclude=keep_float,
                                calibrate_method=CalibrationMethod.Percentile,
                                extra_options={"CalibPercentile": CALIBRATION_PERCENTILE})
        finally:
            logger.setLevel(level)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
