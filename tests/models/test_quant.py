"""Integer-valued float32 arithmetic: exact across batching and threads inside the bound."""
import subprocess
import sys

import torch
import torch.nn.functional as F

from stcm.models.quant import (EXACT_LIMIT, accumulator_bound, fake_quant_activation,
                               fake_quant_weight, is_exact, quantize_weight)


def _integer_layer(cout=96, cin=128, k=1, wbits=6, abits=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w_int, _ = quantize_weight(torch.randn(cout, cin, k, k, generator=gen), wbits)
    a = torch.randint(0, 2 ** abits, (33, cin, 32, k), generator=gen).float()
    return w_int, a


def test_quantized_weights_are_integers_within_their_bits():
    w = torch.randn(16, 8, 5, 5) * torch.logspace(-3, 1, 16).view(-1, 1, 1, 1)
    w_int, e = quantize_weight(w, bits=7)
    assert torch.equal(w_int, torch.round(w_int)) and w_int.abs().max() <= 63
    rel = (w_int * torch.pow(2.0, e).view(-1, 1, 1, 1) - w).abs().flatten(1).amax(1)
    assert (rel <= torch.pow(2.0, e) / 2 + 1e-12).all()  # at most half a grid step off
    assert torch.equal(fake_quant_weight(w, 7), w_int * torch.pow(2.0, e).view(-1, 1, 1, 1))


def test_fake_quant_passes_gradients_straight_through():
    x = torch.linspace(0, 3.5, 9, requires_grad=True)  # inside the 4-bit range [0, 3.75]
    fake_quant_activation(x, bits=4, exponent=-2).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    outside = torch.tensor([-1.0, 5.0], requires_grad=True)
    fake_quant_activation(outside, bits=4, exponent=-2).sum().backward()
    assert torch.equal(outside.grad, torch.zeros(2))  # clamped values get no gradient


def test_integer_convolution_is_identical_for_any_batch_and_equals_the_exact_sum():
    w_int, a = _integer_layer()
    assert is_exact(w_int, 127)
    full = F.conv2d(a, w_int)
    ones = torch.cat([F.conv2d(a[i: i + 1], w_int) for i in range(a.shape[0])])
    assert torch.equal(full, ones)
    exact = torch.einsum("oc,bchw->bohw", w_int[:, :, 0, 0].double(), a.double())
    assert torch.equal(full.double(), exact)


def test_integer_convolution_is_identical_on_one_thread():
    script = ("import torch, torch.nn.functional as F;"
              "from tests_quant_helper import layer;"
              "w, a = layer(); torch.set_num_threads(int(__import__('sys').argv[1]));"
              "import hashlib; print(hashlib.sha256(F.conv2d(a, w).numpy().tobytes()).hexdigest())")
    helper = ("import torch\nfrom stcm.models.quant import quantize_weight\n"
              "def layer():\n"
              "    g = torch.Generator().manual_seed(0)\n"
              "    w, _ = quantize_weight(torch.randn(96, 128, 1, 1, generator=g), 6)\n"
              "    a = torch.randint(0, 128, (33, 128, 32, 1), generator=g).float()\n"
              "    return w, a\n")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tests_quant_helper.py").write_text(helper)
        outs = [subprocess.run([sys.executable, "-c", script, n], capture_output=True, text=True,
                               cwd=tmp, check=True).stdout for n in ("1", "2")]
    assert outs[0] == outs[1]


def test_accumulator_bound_flags_layers_that_could_round():
    w_int = torch.full((4, 4096, 1, 1), 63.0)
    assert accumulator_bound(w_int, 127) == 4096 * 63 * 127
    assert not is_exact(w_int, 127) and 4096 * 63 * 127 >= EXACT_LIMIT
    assert is_exact(w_int[:, :2000], 127)


def test_onnxruntime_computes_the_same_exact_integers_as_torch(tmp_path):
    import onnxruntime as ort

    from stcm.export.onnx import export_stage
    from stcm.export.stages import StageSignature, TensorSpec

    w_int, a = _integer_layer(cout=64, cin=96, k=3, seed=3)
    conv = torch.nn.Conv2d(96, 64, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(w_int)
    signature = StageSignature("conv", (TensorSpec("a", ("batch", 96, "h", "w")),),
                               (TensorSpec("out", ("batch", 64, "h", "w")),))
    export_stage(conv, signature, tmp_path / "conv.onnx", sizes={"h": 8, "w": 3})
    session = ort.InferenceSession(str(tmp_path / "conv.onnx"),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {"a": a.numpy()})[0]
    with torch.no_grad():
        assert torch.equal(torch.from_numpy(got), conv(a))
