"""The exact entropy path's arithmetic: integer grids, the accumulator bound of every layer of
every configuration, and integer results identical across batching, threads and runtimes."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from stcm.models.codec import STCM
from stcm.config import CONTEXTS, get_config
from stcm.models.quant import (EXACT_LIMIT, ActQuant, QConv2d, QConvTranspose2d, ceil_log2,
                               exact_layers, pow2, quantize_mean, quantize_weights)


def test_exponents_and_powers_of_two_are_exact():
    e = torch.arange(-126, 128, dtype=torch.float32)
    assert torch.equal(pow2(e).double(), torch.pow(2.0, e.double()))
    x = torch.tensor([1.0, 2.0, 3.0, 0.75, 2.0 ** -40, 1000.0, 1024.0])
    assert ceil_log2(x).tolist() == [0, 1, 2, 0, -40, 10, 10]


def test_weights_land_on_per_channel_grids_within_their_bits():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, 8, 3, 3, generator=gen) * torch.logspace(-3, 1, 16).view(-1, 1, 1, 1)
    b = torch.randn(16, generator=gen)
    e_in = torch.full((8,), -6.0)
    w_q, b_q, bound = quantize_weights(w, b, 8, e_in, in_top=511)
    e = ceil_log2(w_q.abs().flatten(1).amax(1) / 127)  # the grid each channel ended on
    w_int = w_q / pow2(e).view(-1, 1, 1, 1)
    assert torch.equal(w_int, torch.round(w_int)) and w_int.abs().max() <= 127
    b_int = b_q / pow2(e - 6)
    assert torch.equal(b_int, torch.round(b_int))  # bias on the accumulator's grid
    assert (bound < EXACT_LIMIT).all()
    # small layers keep full 8-bit precision: the rounding error is half a grid step
    assert ((w_q - w).abs() <= pow2(e).view(-1, 1, 1, 1) / 2).all()


def test_the_bound_coarsens_the_grid_of_layers_that_could_overflow():
    w = torch.ones(4, 4096, 1, 1)  # 4096 terms of 127 x 511 would overflow 2^24
    w_q, _, bound = quantize_weights(w, None, 8, torch.zeros(4096), in_top=511)
    assert (bound < EXACT_LIMIT).all()
    # the finest grid that fits: w_int = 8 (1 = 8 * 2^-3); one step finer (16) would overflow
    assert torch.equal(w_q, torch.ones_like(w_q)) and int(bound.max()) == 4096 * 511 * 8
    assert 4096 * 511 * 16 >= EXACT_LIMIT
    huge_bias = quantize_weights(torch.randn(2, 3, 1, 1), torch.tensor([1e9, -1e9]), 8,
                                 torch.zeros(3), in_top=511)
    assert (huge_bias[2] < EXACT_LIMIT).all()


def test_transposed_bound_counts_only_the_taps_that_meet():
    layer = QConvTranspose2d(4, 2, 5, 2, 2, 1, act=ActQuant(10, True))
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.zero_()
    layer.eval()
    # stride 2, kernel 5: at most 3 x 3 taps of each input channel meet at one output;
    # weight 1.0 on the grid 2^-6 is w_int = 64, inputs reach 511
    assert torch.equal(layer.coded_weights()[0], torch.ones(4, 2, 5, 5))
    assert layer.accumulator_bound() == 4 * 9 * 64 * 511


def test_activation_quantizer_rounds_clamps_and_passes_gradients_straight_through():
    q = ActQuant(4, signed=False)
    q.train()
    x = torch.linspace(0, 3, 7, requires_grad=True)
    y = q(x)  # first batch: max 3, headroom 2 -> grid 2^ceil(log2(6/15)) = 0.5
    assert q.exponent.item() == -1.0
    assert torch.equal(y.detach(), torch.round(x.detach() * 2) / 2)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    q.eval()
    assert q(torch.tensor([-1.0, 100.0])).tolist() == [0.0, 7.5]  # unsigned, 15 steps of 0.5


def test_observer_follows_growth_at_once_and_decays_slowly():
    q = ActQuant(10, signed=True)
    q.train()
    q(torch.tensor([1.0]))
    q(torch.tensor([8.0]))
    assert q.running_max.item() == 8.0
    q(torch.tensor([0.0]))
    assert 7.99 < q.running_max.item() < 8.0


def test_means_lie_on_their_grid():
    m = quantize_mean(torch.tensor([0.01, -1.337, 3.5]), 6, ste=False)
    assert torch.equal(m * 64, torch.round(m * 64))


def _configs():
    for preset in ("tiny", "small", "elic"):
        for context in CONTEXTS:
            yield preset, context


@pytest.mark.parametrize("preset,context", list(_configs()))
def test_every_exact_layer_of_every_configuration_is_within_the_bound(preset, context):
    torch.manual_seed(0)
    model = STCM(get_config(preset, context=context))
    layers = dict(exact_layers(model))
    # the whole entropy path and nothing else
    assert layers and all(name.startswith(("h_s.", "entropy_parameters.")) for name in layers)
    plain = [n for n, m in model.h_s.named_modules() if isinstance(m, torch.nn.Conv2d)
             and not isinstance(m, (QConv2d,))]
    assert not plain
    with torch.no_grad():  # adversarial weights: large, and biases far off the grid
        for _, layer in layers.items():
            layer.weight.mul_(1000)
            if layer.bias is not None:
                layer.bias.normal_(0, 1e4)
    for name, layer in layers.items():
        bound = layer.accumulator_bound()
        assert 0 < bound < EXACT_LIMIT, f"{preset}/{context} {name}: {bound}"


def _exact_layer(seed=0):
    torch.manual_seed(seed)
    layer = QConv2d(128, 96, 3, padding=1, act=ActQuant(10, signed=True))
    layer.train()
    layer(torch.randn(4, 128, 8, 8) * 3)  # calibrate
    return layer.eval()


def test_exact_convolution_is_identical_for_any_batch_and_equals_the_integer_sum():
    layer = _exact_layer()
    a = torch.randn(33, 128, 16, 3) * 3
    with torch.no_grad():
        full = layer(a)
        ones = torch.cat([layer(a[i: i + 1]) for i in range(a.shape[0])])
        w, b = layer.coded_weights()
        exact = F.conv2d(layer.act(a).double(), w.double(), b.double(), padding=1)
    assert torch.equal(full, ones)
    assert torch.equal(full.double(), exact)


def test_exact_convolution_is_identical_on_one_and_two_threads(tmp_path):
    torch.save(_exact_layer().state_dict(), tmp_path / "layer.pt")
    script = (
        "import sys, hashlib, torch\n"
        "sys.path.insert(0, r'" + str(tmp_path) + "')\n"
        "from stcm.models.quant import ActQuant, QConv2d\n"
        "torch.set_num_threads(int(sys.argv[1]))\n"
        "layer = QConv2d(128, 96, 3, padding=1, act=ActQuant(10, signed=True)).eval()\n"
        "layer.load_state_dict(torch.load(r'" + str(tmp_path / "layer.pt") + "', "
        "weights_only=True))\n"
        "a = torch.randn(33, 128, 16, 8, generator=torch.Generator().manual_seed(1)) * 3\n"
        "with torch.no_grad(): out = layer(a)\n"
        "print(hashlib.sha256(out.numpy().tobytes()).hexdigest())\n")
    outs = [subprocess.run([sys.executable, "-c", script, n], capture_output=True, text=True,
                           check=True).stdout for n in ("1", "2")]
    assert outs[0] == outs[1] and len(outs[0]) == 65


def test_onnxruntime_computes_the_same_exact_results_as_torch(tmp_path):
    import onnxruntime as ort

    from stcm.export.onnx import export_stage
    from stcm.manifest import StageSignature, TensorSpec

    layer = _exact_layer(seed=3)
    layer.coded_weights()
    signature = StageSignature("conv", (TensorSpec("a", ("batch", 128, "h", "w")),),
                               (TensorSpec("out", ("batch", 96, "h", "w")),))
    export_stage(layer, signature, tmp_path / "conv.onnx", sizes={"h": 8, "w": 3})
    session = ort.InferenceSession(str(tmp_path / "conv.onnx"),
                                   providers=["CPUExecutionProvider"])
    a = torch.randn(33, 128, 12, 5) * 3
    got = session.run(None, {"a": a.numpy()})[0]
    with torch.no_grad():
        assert torch.equal(torch.from_numpy(got), layer(a))


def test_cached_coded_weights_follow_weight_and_exponent_changes():
    layer = _exact_layer()
    before = layer.coded_weights()[0].clone()
    with torch.no_grad():
        layer.weight.mul_(3)
    assert not torch.equal(layer.coded_weights()[0], before)
    scaled = layer.coded_weights()[1].clone()
    layer.load_state_dict({**layer.state_dict(), "act.exponent": layer.act.exponent - 1})
    assert not torch.equal(layer.coded_weights()[1], scaled)  # bias grid follows the input's
