"""The torch backend's faster forms of the float transforms compute the same function."""
import pytest
import torch
from torch import nn

from stcm.models.codec import STCM
from stcm.config import get_config
from stcm.export.subpixel import SubpixelConvTranspose
from stcm.runtime.backends.torch_backend import SUBPIXEL_MAX_CHANNELS, TorchBackend


@pytest.mark.parametrize("k,s", [(5, 2), (3, 2), (5, 4), (3, 1), (7, 3)])
def test_subpixel_form_equals_the_transposed_convolution(k, s):
    torch.manual_seed(0)
    deconv = nn.ConvTranspose2d(6, 3, k, stride=s, padding=k // 2, output_padding=s - 1)
    x = torch.randn(2, 6, 7, 5)
    with torch.no_grad():
        torch.testing.assert_close(SubpixelConvTranspose(deconv)(x), deconv(x),
                                   rtol=1e-5, atol=1e-5)


def test_subpixel_form_refuses_other_geometries():
    with pytest.raises(ValueError):
        SubpixelConvTranspose(nn.ConvTranspose2d(4, 3, 5, stride=2, padding=1))


@pytest.mark.parametrize("backbone", ["elic", "hl"])
def test_backend_synthesis_matches_the_model_and_leaves_the_model_alone(backbone):
    torch.manual_seed(0)
    model = STCM(get_config("tiny", backbone=backbone)).eval()
    before = [type(m) for m in model.g_s.modules()]
    backend = TorchBackend(model)
    assert [type(m) for m in model.g_s.modules()] == before
    narrow = [m for m in backend.modules["synthesis"].modules()
              if isinstance(m, SubpixelConvTranspose)]
    assert len(narrow) == sum(isinstance(m, nn.ConvTranspose2d)
                              and m.out_channels < SUBPIXEL_MAX_CHANNELS
                              for m in model.g_s.modules()) == (1 if backbone == "elic" else 2)
    latent = torch.randn(1, model.cfg.M, 5, 6)
    with torch.no_grad():
        out = backend.run("synthesis", latent.numpy())[0]  # the runtime's arrays: NumPy
        torch.testing.assert_close(torch.from_numpy(out), model.g_s(latent), rtol=1e-4, atol=1e-4)
