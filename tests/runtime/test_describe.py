"""`stcm info`'s descriptions: every field from the file itself, strict JSON, clear text."""
import json

import numpy as np
import pytest
import torch

from conftest import make_smooth_image
from stcm.config import get_config
from stcm.errors import CheckpointError, ContainerError
from stcm.models.checkpoint import save_checkpoint
from stcm.models.codec import STCM
from stcm.runtime.codec import Codec
from stcm.runtime.container import read_container
from stcm.runtime.describe import describe, describe_container, format_description
from stcm.runtime.georeference import Georeference


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return STCM(get_config("tiny")).eval()


def _image(seed, bands=3, h=40, w=56):
    return np.rint(make_smooth_image(np.random.default_rng(seed), bands, h, w) * 255
                   ).astype(np.uint8)


def test_a_container_is_described_from_its_own_fields(model, tmp_path):
    codec = Codec(model, tile_size=2)
    georef = Georeference("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 6e6), float("nan"))
    first = codec.compress(_image(0), 0.5, georef=georef)
    later = codec.compress(_image(1), 0.5, reference=first, temporal="on")
    path = tmp_path / "later.stcm"
    path.write_bytes(later)
    info = describe(path)
    container = read_container(later)
    assert info["kind"] == "container" and info["path"] == str(path)
    assert info["bytes"] == len(later) and (info["height"], info["width"]) == (40, 56)
    assert info["tiles"] == container.header.tiles and len(info["streams"]) == len(
        container.entries)
    assert sum(s["bytes"] for s in info["streams"]) < len(later)
    assert info["reference_id"] is not None and info["intra_tiles"] == []
    json.dumps(info, allow_nan=False)  # strict JSON, whatever the nodata value
    text = format_description(info)
    assert f"{info['band_groups'] * info['tiles']} tiles use it, 0 coded intra" in text
    described = describe_container(first)
    assert described["crs"] == "EPSG:32633" and described["nodata"] == "nan"
    assert described["transform"] == list(georef.transform) and described["path"] is None
    assert "georef    EPSG:32633" in format_description(described)


def test_a_checkpoint_is_described_with_its_config_and_record(model, tmp_path):
    path = save_checkpoint(model, tmp_path / "m.safetensors",
                           {"step": 7, "validation": {"q0": {"bpp": 0.5, "psnr": 30.0}}})
    info = describe(path)
    assert info["kind"] == "checkpoint" and info["step"] == 7
    assert info["config"]["name"] == "tiny" and info["parameters"]["total"] == sum(
        p.numel() for p in model.parameters())
    text = format_description(info)
    assert "trained   7 steps\n" in text and "val q0    0.5000 bpp (estimated)" in text
    assert "exact integers" in text and "spatial=diag x" in text
    assert f"temporal=True ({model.cfg.temporal_width} units)" in text


def test_a_temporal_retraining_says_what_its_record_measured(model, tmp_path):
    from stcm.models.temporal_units import grow_temporal

    grown = grow_temporal(model, model.cfg.temporal_width + 4, prediction=True)
    record = {"step": 9, "train": {"temporal_keep": model.cfg.temporal_width},
              "validation": {"q0": {"bpp": 0.4, "bpp_alone": 0.5, "psnr": 30.0}}}
    text = format_description(describe(save_checkpoint(grown, tmp_path / "g.safetensors",
                                                       record)))
    assert "trained   9 steps (its last run retrained the temporal branch alone)" in text
    assert "0.4000 bpp with the reference, 0.5000 alone (revisits" in text
    assert f"temporal=True ({grown.cfg.temporal_width} units + prediction)" in text


def test_damaged_or_foreign_files_are_refused(model, tmp_path):
    data = Codec(model).compress(_image(2), 0.5)
    (tmp_path / "cut.stcm").write_bytes(data[: len(data) // 2])
    with pytest.raises(ContainerError):
        describe(tmp_path / "cut.stcm")
    (tmp_path / "x.bin").write_bytes(b"not a model at all")
    with pytest.raises(CheckpointError):
        describe(tmp_path / "x.bin")
    with pytest.raises(CheckpointError):
        describe(tmp_path / "missing")
