"""Checkpoints rebuild their model from the file alone, and refuse what is not one."""
import pytest
import torch
from safetensors.torch import save_file

from stcm.errors import CheckpointError
from stcm.models.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from stcm.models.codec import STCM
from stcm.config import get_config


@pytest.mark.parametrize("context", ["diag", "checkerboard"])
def test_checkpoint_round_trip_rebuilds_an_identical_model(tmp_path, context):
    torch.manual_seed(0)
    model = STCM(get_config("tiny", context=context, context_layers=2)).eval()
    path = save_checkpoint(model, tmp_path / "ck.safetensors", meta={"step": 7})
    loaded, meta = load_checkpoint(path)
    assert meta == {"step": 7} and loaded.cfg == model.cfg
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x, 0.4).x_hat, loaded(x, 0.4).x_hat)


def test_fp16_checkpoint_loads_into_a_float32_model(tmp_path):
    model = STCM(get_config("tiny"))
    loaded, _ = load_checkpoint(save_checkpoint(model, tmp_path / "h.safetensors", half=True))
    w = next(loaded.parameters())
    assert w.dtype == torch.float32
    assert torch.allclose(w, next(model.parameters()), rtol=1e-3, atol=1e-4)


def test_foreign_or_broken_files_are_refused(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"format": "other"})
    with pytest.raises(CheckpointError, match="not an stcm checkpoint"):
        read_metadata(foreign)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing")


def test_checkpoint_whose_weights_do_not_fit_its_config_is_refused(tmp_path):
    small = save_checkpoint(STCM(get_config("tiny")), tmp_path / "a.safetensors")
    tensors = {"g_a.0.weight": torch.zeros(3)}
    cfg_json = get_config("tiny").to_json()
    save_file(tensors, str(tmp_path / "b.safetensors"), metadata={
        "format": "stcm-checkpoint", "format_version": "1", "config": cfg_json, "meta": "{}"})
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(tmp_path / "b.safetensors")
    assert load_checkpoint(small)[0].cfg.name == "tiny"
