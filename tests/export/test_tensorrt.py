"""TensorRT plans: profile derivation and clear errors everywhere; building, per-stage accuracy
and a codec round trip where the tensorrt package and a CUDA GPU exist.

The GPU tests have never run on the machine this was written on (no TensorRT, no GPU).
"""
import copy
import sys

import numpy as np
import pytest
import torch

from conftest import make_smooth_image
from stcm.errors import ConfigError, EngineError
from stcm.export.onnx import export_engine
from stcm.manifest import StageSignature, TensorSpec, is_entropy_stage, read_manifest
from stcm.export.tensorrt import (MAX_TILE, build_engines, profile_shapes,
                                  stage_precision)
from stcm.models.codec import STCM
from stcm.config import CONTEXTS, get_config
from stcm.runtime.backends.tensorrt_backend import TensorRTBackend
from stcm.runtime.codec import Codec

TILE_AXES = {"tile_h", "tile_w", "rows"}
needs_gpu = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="TensorRT plans are built and run on a CUDA GPU; torch sees none here")


def _model(**overrides) -> STCM:
    torch.manual_seed(0)
    return STCM(get_config("tiny", **overrides)).eval()


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory):
    """A tiny diag engine without TensorRT plans."""
    out = tmp_path_factory.mktemp("trt") / "engine"
    export_engine(_model(), out, progress=False)
    return out


# -- always run ------------------------------------------------------------------------------

def test_build_engines_without_tensorrt_says_how_to_get_it(engine_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    with pytest.raises(ConfigError, match="TensorRT is not installed; pip install tensorrt"):
        build_engines(engine_dir, read_manifest(engine_dir))
    assert not list(engine_dir.glob("*.plan"))


def test_export_with_tensorrt_but_without_it_fails_cleanly(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ConfigError, match="TensorRT is not installed"):
        export_engine(_model(context="none"), tmp_path / "engine", tensorrt=True, progress=False)
    assert list(tmp_path.iterdir()) == []  # no half-written engine left behind


def test_backend_refuses_an_engine_without_plans(engine_dir):
    with pytest.raises(EngineError, match="no TensorRT plans; re-export with --tensorrt"):
        TensorRTBackend(engine_dir, read_manifest(engine_dir))
    with pytest.raises(EngineError, match="no TensorRT plans"):
        Codec(engine=engine_dir, backend="trt")


def test_backend_without_tensorrt_says_how_to_get_it(engine_dir, monkeypatch):
    manifest = copy.deepcopy(read_manifest(engine_dir))
    manifest["tensorrt"] = {"version": "10.0.0", "fp16": False, "stages": {
        name: {"file": f"{name}.plan", "sha256": "0" * 64, "precision": "fp32"}
        for name in manifest["stages"]}}
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ConfigError, match="TensorRT is not installed"):
        TensorRTBackend(engine_dir, manifest)
    del manifest["tensorrt"]["stages"]["synthesis"]
    with pytest.raises(EngineError, match="synthesis"):
        TensorRTBackend(engine_dir, manifest)


@pytest.mark.parametrize("context", CONTEXTS)
def test_profiles_are_ordered_and_follow_the_axis_names(context, tmp_path):
    export_engine(_model(context=context), tmp_path / "e", progress=False)
    stages = read_manifest(tmp_path / "e")["stages"]
    for name, entry in stages.items():
        sig = StageSignature.from_dict(name, entry)
        shapes = profile_shapes(sig, max_batch=16, max_size=2048)
        assert list(shapes) == [s.name for s in sig.inputs]
        tiled = any(d in TILE_AXES for s in sig.inputs for d in s.shape)
        for spec in sig.inputs:
            lo, opt, hi = shapes[spec.name]
            assert len(lo) == len(opt) == len(hi) == len(spec.shape)
            for axis, a, b, c in zip(spec.shape, lo, opt, hi):
                assert 1 <= a <= b <= c, (name, spec.name, axis)
                if isinstance(axis, int):
                    assert a == b == c == axis
                elif axis == "batch":
                    assert (a, b, c) == ((1, 1, 16) if tiled else (1, 1, 1))
                elif axis in TILE_AXES:
                    assert (a, b, c) == (1, MAX_TILE, MAX_TILE)
                else:
                    div = {"height": 1, "width": 1, "lat_h": 16, "lat_w": 16, "z_h": 64,
                           "z_w": 64}[axis]
                    assert (a, b, c) == (64 // div, 1024 // div, 2048 // div)
        # same axis name, same range, across the inputs of one stage
        ranges = {}
        for spec in sig.inputs:
            for i, axis in enumerate(spec.shape):
                if isinstance(axis, str):
                    r = tuple(shapes[spec.name][k][i] for k in range(3))
                    assert ranges.setdefault(axis, r) == r
        half = not is_entropy_stage(name) and name != "hyper_analysis"
        assert stage_precision(name, True) == ("fp16" if half else "fp32")
        assert stage_precision(name, False) == "fp32"


@pytest.mark.parametrize("context", ["diag", "checkerboard"])
def test_profiles_cover_the_shapes_the_codec_feeds(context, tmp_path):
    """Records every stage call of a real round trip (torch backend, default 64-tile size)
    and checks each input shape lies inside the profile the plans would be built with."""
    model = _model(context=context)
    export_engine(model, tmp_path / "e", progress=False)
    stages = read_manifest(tmp_path / "e")["stages"]
    codec = Codec(model, tile_size=MAX_TILE)
    seen = []
    run = codec.backend.run

    def recording(stage, *inputs):
        seen.append((stage, [tuple(t.shape) for t in inputs]))
        return run(stage, *inputs)

    codec.backend.run = recording
    image = np.rint(make_smooth_image(np.random.default_rng(0), 3, 70, 150) * 255).astype(np.uint8)
    codec.decompress(codec.compress(image, 0.5))
    assert {s for s, _ in seen} >= {"analysis", "synthesis", "hyper_synthesis", "side_0"}
    for stage, shapes in seen:
        profile = profile_shapes(StageSignature.from_dict(stage, stages[stage]))
        for spec_shape, (lo, _, hi) in zip(shapes, profile.values()):
            assert all(a <= s <= b for s, a, b in zip(spec_shape, lo, hi)), (stage, spec_shape)


def test_profile_limits_are_checked():
    sig = StageSignature("s", (TensorSpec("x", ("batch", 3, "height", "width")),), ())
    for bad in (0, 100, 4000):
        with pytest.raises(ConfigError, match="max_size"):
            profile_shapes(sig, max_size=bad)
    with pytest.raises(ConfigError, match="max_batch"):
        profile_shapes(sig, max_batch=0)
    assert profile_shapes(sig, max_size=512)["x"][1] == [1, 3, 512, 512]  # opt clipped to max
    odd = StageSignature("s", (TensorSpec("x", ("batch", "depth")),), ())
    with pytest.raises(ConfigError, match="depth"):
        profile_shapes(odd)


# -- GPU only --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trt_engine(tmp_path_factory):
    """A tiny diag engine with TensorRT plans (max_size 1024 keeps the build quick)."""
    pytest.importorskip("tensorrt", reason="needs the tensorrt package (NVIDIA; GPU hosts only)")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT plans are built and run on a CUDA GPU; torch sees none here")
    out = tmp_path_factory.mktemp("trt_plans") / "engine"
    export_engine(_model(), out, progress=False)
    manifest = read_manifest(out)
    manifest["tensorrt"] = build_engines(out, manifest, max_batch=4, max_size=1024)
    from stcm.manifest import write_manifest

    write_manifest(out, manifest)
    return out


def _inputs(sig: StageSignature, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    tiled = any(d in TILE_AXES for s in sig.inputs for d in s.shape)
    sizes = {"batch": 2 if tiled else 1, "height": 128, "width": 192, "lat_h": 8, "lat_w": 12,
             "z_h": 2, "z_w": 3, "tile_h": 7, "tile_w": 9, "rows": 7}
    out = []
    for spec in sig.inputs:
        shape = [sizes[d] if isinstance(d, str) else d for d in spec.shape]
        x = torch.rand(shape, generator=gen)
        out.append((x > 0.3).float() if spec.name == "valid" else x)
    return tuple(out)


@needs_gpu
def test_plans_are_listed_in_the_manifest_and_verified(trt_engine):
    manifest = read_manifest(trt_engine)  # checks every plan's sha256
    plans = manifest["tensorrt"]
    assert set(plans["stages"]) == set(manifest["stages"])
    for name, entry in plans["stages"].items():
        assert (trt_engine / entry["file"]).is_file()
        assert entry["precision"] == "fp32"
        for lo, opt, hi in entry["profile"].values():
            assert all(a <= b <= c for a, b, c in zip(lo, opt, hi))


@needs_gpu
def test_every_stage_matches_onnxruntime(trt_engine):
    from stcm.runtime.backends.ort_backend import OrtBackend

    manifest = read_manifest(trt_engine)
    trt_backend = TensorRTBackend(trt_engine, manifest)
    ort_backend = OrtBackend(trt_engine, manifest, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    for name in sorted(manifest["stages"]):
        inputs = [t.numpy() for t in _inputs(trt_backend.signatures[name], gen)]
        got = trt_backend.run(name, *inputs)
        want = ort_backend.run(name, *inputs)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert isinstance(g, np.ndarray) and g.dtype == np.float32
            assert g.shape == w.shape, name
            np.testing.assert_allclose(g, w, atol=1e-3, rtol=1e-3, err_msg=name)


@needs_gpu
def test_shapes_outside_the_profile_are_refused(trt_engine):
    backend = TensorRTBackend(trt_engine, read_manifest(trt_engine))
    with pytest.raises(ConfigError, match="profile"):
        backend.run("analysis", np.zeros((1, 3, 64, 2048), np.float32))  # wider than max_size


@needs_gpu
def test_codec_round_trip_on_tensorrt(trt_engine):
    codec = Codec(engine=trt_engine, backend="tensorrt", tile_size=8)
    assert codec.numerics == "tensorrt-cuda-fp32"
    image = np.rint(make_smooth_image(np.random.default_rng(1), 3, 70, 90) * 255).astype(np.uint8)
    data, enc_latents = codec._compress(image, 0.6, None, None, None)
    decoded, dec_latents = codec._decompress(data, None)
    for a, b in zip(enc_latents, dec_latents):
        assert np.array_equal(a, b)  # the decoder rebuilt exactly the encoder's latent
    back = codec.decompress(data)
    assert back.shape == image.shape and back.dtype == image.dtype
    assert np.array_equal(back, decoded.pixels)
