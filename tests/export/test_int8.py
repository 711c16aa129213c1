"""The int8 synthesis (``stcm export --int8-synthesis``): only 8-bit images' pixels change,
a little; latents never."""
import numpy as np
import pytest

from stcm import SAMPLES_DIR
from stcm.cli import main
from stcm.errors import ConfigError
from stcm.export.onnx import export_engine
from stcm.manifest import INT8_SYNTHESIS, read_manifest
from stcm.runtime.codec import Codec, default_model_path
from stcm.runtime.imageio import read_raster


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """(fp32 codec, int8 codec, int8 engine folder), both engines of the built-in model:
    quantization only means something for trained weights."""
    root = tmp_path_factory.mktemp("int8")
    export_engine(default_model_path(), root / "fp32", progress=False)
    assert main(["export", "default", str(root / "int8"), "--int8-synthesis"]) == 0
    options = {"threads": 1}
    return (Codec(engine=root / "fp32", engine_options=options, progress=False),
            Codec(engine=root / "int8", engine_options=options, progress=False), root / "int8")


def _stages(codec, data):
    """The stages one decode of ``data`` runs, and its (pixels, latents)."""
    ran, run = [], codec.backend.run

    def spy(stage, *inputs):
        ran.append(stage)
        return run(stage, *inputs)

    codec.backend.run = spy
    try:
        result = codec._decompress(data, None)
    finally:
        del codec.backend.run
    return set(ran), result


def test_the_manifest_records_the_int8_stage(engines, capsys):
    capsys.readouterr()
    assert main(["info", str(engines[2])]) == 0
    assert "synthesis_int8.onnx      int8 (run for 8-bit images)" in capsys.readouterr().out
    entries = read_manifest(engines[2])["stages"]
    assert entries[INT8_SYNTHESIS]["precision"] == "int8"
    assert entries[INT8_SYNTHESIS]["file"] != entries["synthesis"]["file"]
    assert "precision" not in entries["synthesis"]  # the fp32 graph stays for other images


def test_8_bit_images_decode_through_int8_with_the_same_latents(engines):
    fp32, int8, _ = engines
    image = read_raster(SAMPLES_DIR / "neon_osbs_rgb8.tif").pixels[:, :256, :256]
    data = fp32.compress(image, 0.75)
    assert int8.compress(image, 0.75) == data  # g_s is not on the encoder's path
    ran_fp32, (want, latents) = _stages(fp32, data)
    ran_int8, (got, latents8) = _stages(int8, data)
    assert INT8_SYNTHESIS in ran_int8 and "synthesis" not in ran_int8
    assert INT8_SYNTHESIS not in ran_fp32
    for a, b in zip(latents, latents8):
        np.testing.assert_array_equal(a, b)
    diff = got.pixels.astype(float) - want.pixels.astype(float)
    assert 0 < np.abs(diff).mean() < 1.5  # it does change pixels, by about a level
    assert 10 * np.log10(255 ** 2 / np.mean(diff ** 2)) > 40


def test_16_bit_images_keep_the_float_synthesis(engines):
    fp32, int8, _ = engines
    image = read_raster(SAMPLES_DIR / "sentinel2_b234_8_uint16.tif").pixels
    data = fp32.compress(image, 0.75)
    ran, (pixels, _) = _stages(int8, data)
    assert "synthesis" in ran and INT8_SYNTHESIS not in ran
    np.testing.assert_array_equal(pixels.pixels, fp32.decompress(data))


def test_int8_synthesis_is_refused_with_tensorrt(tmp_path):
    with pytest.raises(ConfigError, match="int8"):
        export_engine(default_model_path(), tmp_path / "e", tensorrt=True, int8_synthesis=True)


def test_the_channels_last_graph_computes_what_the_qdq_graph_does(tmp_path):
    """``_channels_last`` moves a quantized g_s-like net (float first and last convolutions,
    a residual block, a transposed convolution in sub-pixel form) into NHWC: the same outputs
    bit for bit, the pixel shuffle as four phase convolutions without the zero taps, and
    transposes only where a float operator meets a quantized one."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from stcm.export.int8 import _calibration_reader, _channels_last, _float_layers
    from stcm.export.subpixel import SubpixelConvTranspose

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first = torch.nn.Conv2d(8, 16, 3, padding=1)
            self.reduce = torch.nn.Conv2d(16, 8, 1)
            self.masked = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.expand = torch.nn.Conv2d(8, 16, 1)
            self.up = SubpixelConvTranspose(torch.nn.ConvTranspose2d(
                16, 4, 5, 2, padding=2, output_padding=1))
            self.post = torch.nn.Conv2d(4, 4, 3, padding=1)
            self.last = torch.nn.Conv2d(4, 3, 3, padding=1)

        def forward(self, x):
            h = self.first(x)
            h = h + self.expand(torch.relu(self.masked(torch.relu(self.reduce(h)))))
            return self.last(torch.relu(self.post(self.up(h))))

    torch.manual_seed(0)
    fp32, qdq, out = tmp_path / "fp32.onnx", tmp_path / "qdq.onnx", tmp_path / "nhwc.onnx"
    torch.onnx.export(Net().eval(), (torch.zeros(1, 8, 12, 12),), str(fp32), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {2: "h", 3: "w"}}, opset_version=17)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, 8, 12, 12)).astype(np.float32) for _ in range(4)]
    quantize_static(str(fp32), str(qdq), _calibration_reader("x", inputs),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=_float_layers(onnx.load(str(fp32)).graph))
    _channels_last(qdq, out)
    graph = onnx.load(str(out)).graph
    ops = [(n.domain, n.op_type) for n in graph.node]
    assert ops.count(("com.microsoft", "QLinearConv")) == 8  # all but the float ends
    assert all(("", "QLinearConv") != op for op in ops)
    assert not any(op == "DepthToSpace" for _, op in ops)
    kernels = sorted(tuple(a.ints) for n in graph.node if n.op_type == "QLinearConv"
                     for a in n.attribute if a.name == "kernel_shape")
    # the phases of a 5x5 stride-2 kernel: 3x3, 3x2, 2x3, 2x2 taps (25, not 4 x 9)
    assert [k for k in kernels if k not in ((1, 1), (3, 3))] == [(2, 2), (2, 3), (3, 2)]
    # into NHWC after the first quantize, out before the last float convolution; the
    # shuffle's own transpose moves NHWC blocks (5-d)
    assert ops.count(("", "Transpose")) == 3
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (qdq, out)]
    for shape in ((1, 8, 12, 12), (1, 8, 7, 10)):
        x = (rng.standard_normal(shape) * 2).astype(np.float32)
        want, got = (s.run(None, {"x": x})[0] for s in sessions)
        np.testing.assert_array_equal(got, want)


def test_only_the_cpu_provider_runs_the_int8_synthesis(engines, monkeypatch):
    """The int8 graph holds onnxruntime's CPU operators: a backend under the CUDA provider
    says it does not run it (this host has no CUDA provider, so the list is set by hand), and
    a backend that does not run it decodes 8-bit images through the fp32 g_s."""
    fp32, int8, _ = engines
    backend = int8.backend
    assert backend.runs_int8_synthesis
    monkeypatch.setattr(backend, "providers", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert not backend.runs_int8_synthesis
    monkeypatch.undo()
    image = read_raster(SAMPLES_DIR / "neon_osbs_rgb8.tif").pixels[:, :128, :128]
    data = fp32.compress(image, 0.5)
    monkeypatch.setattr(type(backend), "runs_int8_synthesis", property(lambda self: False))
    ran, (pixels, _) = _stages(int8, data)
    assert "synthesis" in ran and INT8_SYNTHESIS not in ran
    np.testing.assert_array_equal(pixels.pixels, fp32.decompress(data))


def test_the_hl_backbone_quantizes_and_leaves_the_working_directory_alone(tmp_path, monkeypatch):
    """g_s of the hl backbone (Haar merge, two branches) goes through the int8 export, which
    onnxruntime's symbolic shape inference did not: it raised, and left temporary files in
    the working directory. The int8 graph computes about what the fp32 one does."""
    import onnxruntime as ort
    import torch

    from stcm.config import get_config
    from stcm.export.int8 import quantize_synthesis
    from stcm.export.stages import build_stages
    from stcm.models.codec import STCM

    torch.manual_seed(0)
    model = STCM(get_config("tiny", backbone="hl", high_width=16)).eval()
    signature = build_stages(model)["synthesis"][1]
    rng = np.random.default_rng(0)
    latents = [rng.standard_normal((1, model.cfg.M, 16, 16)).astype(np.float32)
               for _ in range(4)]
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    quantize_synthesis(model, signature, tmp_path / "g_s.onnx", latents)
    assert list(workdir.iterdir()) == []
    session = ort.InferenceSession(str(tmp_path / "g_s.onnx"), providers=["CPUExecutionProvider"])
    x = latents[0][:, :, :8, :12]
    with torch.no_grad():
        want = model.g_s(torch.from_numpy(x)).numpy()
    got = session.run(None, {signature.inputs[0].name: x})[0]
    assert got.shape == want.shape
    assert np.abs(got - want).mean() < 0.05 * np.abs(want).mean() + 1e-3
