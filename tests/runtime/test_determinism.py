"""The exact entropy path's guarantee, end to end: identical streams and latents whatever the
tiles per call, the thread count, the backend (torch or onnxruntime) and eager model vs
exported engine -- over a mosaic of 256 crops (real sample crops and noise), each crop one
tile and so one independently coded stream."""
import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from stcm import SAMPLES_DIR
from stcm.export.onnx import export_engine
from stcm.models.codec import pad_image
from stcm.runtime.codec import Codec
from stcm.runtime.imageio import read_raster
from stcm.runtime.scheduler import code_z

CROP, SIDE = 64, 16  # 16 x 16 crops of 64 x 64 pixels; a latent tile of 4 is one crop


def _mosaic(seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = [read_raster(p).pixels for p in sorted(SAMPLES_DIR.glob("*.tif"))]
    out = np.zeros((3, SIDE * CROP, SIDE * CROP), np.float64)
    for i in range(SIDE * SIDE):
        r, c = divmod(i, SIDE)
        if rng.random() < 0.15:  # noise crops push the latent to extremes
            crop = rng.random((3, CROP, CROP))
        else:
            img = images[i % len(images)].astype(np.float64)
            y, x = (int(rng.integers(0, s - CROP + 1)) for s in img.shape[1:])
            crop = img[rng.choice(img.shape[0], 3, replace=False), y: y + CROP, x: x + CROP]
            crop = (crop - crop.min()) / max(np.ptp(crop), 1e-9)
        out[:, r * CROP: (r + 1) * CROP, c * CROP: (c + 1) * CROP] = crop
    return np.rint(out * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def setup(trained_tiny, tmp_path_factory):
    engine = tmp_path_factory.mktemp("exact") / "engine"
    export_engine(trained_tiny, engine, progress=False)
    image = _mosaic()
    stream, latents = Codec(trained_tiny, tile_size=4)._compress(image, 0.9, None, None, None)
    return trained_tiny, engine, image, stream, latents


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_streams_do_not_depend_on_tiles_per_call(setup):
    ckpt, engine, image, stream, latents = setup
    assert Codec(ckpt, tile_size=4, tile_batch=256)._compress(image, 0.9, None, None,
                                                              None)[0] == stream
    assert _same(Codec(ckpt, tile_size=4, tile_batch=37)._decompress(stream, None)[1], latents)
    assert _same(Codec(engine=engine, tile_size=4, tile_batch=256)._decompress(stream, None)[1],
                 latents)
    # Partial edge tiles: a 16 x 20 latent in tiles of 6 (the mosaic's tiles are all whole).
    part = image[:, :200, :264]
    one = Codec(ckpt, tile_size=6, tile_batch=1).compress(part, 0.9)
    assert Codec(ckpt, tile_size=6, tile_batch=5).compress(part, 0.9) == one
    assert np.array_equal(Codec(engine=engine, tile_size=6, tile_batch=7).decompress(one),
                          Codec(engine=engine, tile_size=6, tile_batch=1).decompress(one))


def test_engine_on_onnxruntime_decodes_torch_streams_and_the_reverse(setup):
    ckpt, engine, image, stream, latents = setup
    ort = Codec(engine=engine, tile_size=4)
    assert _same(ort._decompress(stream, None)[1], latents)
    ort_stream, ort_latents = ort._compress(image, 0.9, None, None, None)
    assert _same(Codec(ckpt, tile_size=4)._decompress(ort_stream, None)[1], ort_latents)


def test_streams_do_not_depend_on_the_thread_count(setup, tmp_path):
    ckpt, engine, image, stream, _ = setup
    np.save(tmp_path / "image.npy", image)
    script = (
        "import sys, hashlib, numpy as np, torch\n"
        "torch.set_num_threads(int(sys.argv[1]))\n"
        "from stcm.runtime.codec import Codec\n"
        f"codec = Codec(r'{ckpt}', tile_size=4, tile_batch=16)\n"
        f"data = codec.compress(np.load(r'{tmp_path / 'image.npy'}'), 0.9)\n"
        "print(hashlib.sha256(data).hexdigest())\n")
    for threads in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", script, threads], capture_output=True,
                             text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip() == hashlib.sha256(stream).hexdigest(), threads


def test_eager_full_tensor_model_predicts_the_means_the_step_engine_coded_with(setup):
    """One tile over the whole latent: the wavefront steps on onnxruntime and the eager
    model's masked full-tensor forward give the same hyper prior and means, to the last bit
    (y_hat - mean is an integer everywhere)."""
    ckpt, engine, image, _, _ = setup
    ort = Codec(engine=engine, tile_size=SIDE * CROP // 16)
    eager = Codec(ckpt)
    model = eager.model
    with torch.no_grad():
        x = torch.from_numpy(image[None].astype(np.float32) / 255)
        y = model.g_a(pad_image(x)) * torch.from_numpy(eager.tables.gains(0.9)[0])
        z_hat, _, _ = code_z(eager.z_coder, model.h_a(y).numpy(), eager.medians)
        hyper = ort.backend.run("hyper_synthesis", z_hat)[0]
        y_hat = ort.scheduler.encode(y.numpy(), hyper, None).y_hat
        assert np.array_equal(model.h_s(torch.from_numpy(z_hat)).numpy(), hyper)
        means, _ = model.entropy_parameters(torch.from_numpy(y_hat), torch.from_numpy(hyper),
                                            None)
    residual = torch.from_numpy(y_hat) - means
    assert torch.equal(residual, torch.round(residual))


def test_wide_step_threads_decode_the_same_latents(setup, monkeypatch):
    """One-tile calls of wide step graphs run on the backend's threads (spinning within the
    call): every step graph counts as wide here, and the latents stay those of one thread."""
    from stcm.runtime.backends import ort_backend

    _, engine, _, stream, latents = setup
    monkeypatch.setattr(ort_backend, "WIDE_STEP_BYTES", 0)
    codec = Codec(engine=engine, tile_size=4, tile_batch=1, engine_options={"threads": 2})
    assert _same(codec._decompress(stream, None)[1], latents)
    steps = {key for key in codec.backend.sessions if key[0].startswith("step_")}
    assert steps and all(key[1:] == (2, True) for key in steps), steps
    codec.backend.wide_step_threads = False
    assert _same(codec._decompress(stream, None)[1], latents)
    narrow = {key for key in codec.backend.sessions if key[0].startswith("step_")} - steps
    assert narrow and all(key[1:] == (1, False) for key in narrow), narrow
