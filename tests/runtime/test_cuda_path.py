"""The torch CUDA path: refused clearly without a GPU; exact round trips where there is one."""
import numpy as np
import pytest
import torch

from stcm.errors import ConfigError
from stcm.models.codec import STCM
from stcm.config import get_config
from stcm import kernels
from stcm.runtime.codec import Codec
from stcm.runtime.transfer import to_host

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(),
                               reason="needs a CUDA GPU (this machine has none)")


def _model():
    torch.manual_seed(0)
    return STCM(get_config("tiny")).eval()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ConfigError, match="CUDA"):
        Codec(_model(), device="cuda")


@needs_gpu
def test_cuda_encode_then_decode_is_exact_and_marked_as_cuda_numerics():
    codec = Codec(_model(), device="cuda", tile_size=3)
    image = (np.random.default_rng(0).random((3, 80, 96)) * 255).astype(np.uint8)
    data, latents = codec._compress(image, 0.7, None, None, None)
    decoded, dec_latents = codec._decompress(data, None)
    assert all(np.array_equal(to_host(a), to_host(b)) for a, b in zip(latents, dec_latents))
    assert codec.numerics == "torch-cuda-fp32"
    # With CuPy the scheduler's arrays stay on the GPU (stcm.kernels.select).
    assert codec.device == ("cuda" if kernels.available() else "cpu")
    assert decoded.pixels.shape == image.shape
