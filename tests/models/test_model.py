"""The codec's forward pass: shapes for any image, variable rate, temporal reference, phases."""
import numpy as np
import pytest
import torch

from stcm.errors import ConfigError, NotFrozenError
from stcm.bands import denormalize, from_band_groups, normalize, to_band_groups
from stcm.models.codec import STCM
from stcm.config import PRESETS, ModelConfig, get_config


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return STCM(get_config("tiny")).eval()


@pytest.mark.parametrize("bands,dtype,h,w", [
    (1, np.uint8, 17, 23), (3, np.uint8, 64, 64), (4, np.uint16, 33, 70),
    (5, np.uint16, 65, 31), (13, np.uint16, 40, 41), (16, np.uint8, 20, 96)])
def test_any_size_band_count_and_bit_depth_goes_through_the_model(tiny, bands, dtype, h, w):
    rng = np.random.default_rng(bands)
    top = np.iinfo(dtype).max
    image = rng.integers(0, top, (bands, h, w), endpoint=True).astype(dtype)
    x, norm = normalize(image)
    groups = to_band_groups(x)
    assert groups.shape == (-(-bands // 3), 3, h, w)
    with torch.no_grad():
        out = tiny(torch.from_numpy(groups), quality=0.5)
    assert out.x_hat.shape == groups.shape
    assert out.latent.shape[-2:] == (-(-h // 64) * 4, -(-w // 64) * 4)
    assert torch.isfinite(out.bpp()).all()
    back = denormalize(from_band_groups(out.x_hat.clamp(0, 1).numpy(), bands), norm)
    assert back.shape == image.shape and back.dtype == image.dtype


def test_higher_quality_spends_more_bits_continuously(tiny):
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        bpps = [float(tiny(x, q).bpp()) for q in (0.0, 0.3, 0.5, 0.77, 1.0)]
    assert bpps == sorted(bpps) and bpps[-1] > 2 * bpps[0]


def test_interpolated_quality_lies_between_its_trained_levels(tiny):
    levels = tiny.cfg.num_qualities
    lo, hi = 2 / (levels - 1), 3 / (levels - 1)
    q = torch.tensor([lo, (lo + hi) / 2, hi])
    enc, _ = tiny.gain.gains(q)
    assert torch.all((enc[1] - torch.minimum(enc[0], enc[2])) >= 0)
    assert torch.all((torch.maximum(enc[0], enc[2]) - enc[1]) >= 0)
    lam = tiny.gain.lambdas(q)
    assert lam[0] == pytest.approx(tiny.cfg.lambdas[2]) and lam[2] == pytest.approx(tiny.cfg.lambdas[3])


@pytest.mark.parametrize("quality", [-0.1, 1.5, float("nan")])
def test_quality_outside_unit_interval_is_rejected(tiny, quality):
    with pytest.raises(ConfigError, match="quality"):
        tiny(torch.rand(1, 3, 64, 64), quality)


def test_temporal_reference_changes_the_entropy_model_and_must_match_in_size(tiny):
    gen = torch.Generator().manual_seed(5)
    ref_img = torch.rand(1, 3, 64, 64, generator=gen)
    cur = (ref_img + 0.05 * torch.rand(1, 3, 64, 64, generator=gen)).clamp(0, 1)
    with torch.no_grad():
        ref = tiny(ref_img, 0.5).latent
        alone = tiny(cur, 0.5)
        with_ref = tiny(cur, 0.5, reference=ref)
    assert not torch.equal(alone.means, with_ref.means)
    with pytest.raises(ConfigError, match="reference"):
        tiny(torch.rand(1, 3, 128, 64), 0.5, reference=ref)


def test_without_temporal_branch_the_reference_is_ignored():
    torch.manual_seed(0)
    model = STCM(get_config("tiny", temporal=False)).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a = model(x, 0.5)
        b = model(x, 0.5, reference=torch.randn_like(a.latent))
    assert torch.equal(a.means, b.means)


def test_coding_needs_frozen_tables():
    model = STCM(get_config("tiny"))
    with pytest.raises(NotFrozenError, match="freeze"):
        model.z_tables
    tables = model.freeze().z_tables
    assert tables.pmfs.shape[0] == model.cfg.N
    assert (tables.lengths >= 1).all()


def test_factorized_tables_cover_the_density_after_quantile_training():
    torch.manual_seed(0)
    model = STCM(get_config("tiny"))
    eb = model.entropy_bottleneck
    opt = torch.optim.Adam([eb.quantiles], lr=0.1)
    for _ in range(1500):
        opt.zero_grad()
        eb.aux_loss().backward()
        opt.step()
    tables = model.freeze().z_tables
    mass = tables.pmfs.sum(1)
    assert (mass > 1 - 1e-4).all() and (mass <= 1 + 1e-9).all()


def test_config_round_trips_through_json_and_rejects_bad_values():
    for cfg in PRESETS.values():
        assert ModelConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match="sum"):
        get_config("tiny", groups=(4, 4, 8))
    with pytest.raises(ConfigError, match="context"):
        get_config("tiny", context="zigzag")
    with pytest.raises(ConfigError, match="unknown"):
        ModelConfig.from_dict({**get_config("tiny").to_dict(), "colour": "red"})
    with pytest.raises(ConfigError, match="preset"):
        get_config("huge")
    with pytest.raises(ConfigError, match="needs the temporal branch"):
        get_config("tiny", temporal=False, temporal_prediction=True)


def test_a_feature_added_later_is_left_out_of_configs_without_it():
    # so models made before the field existed keep their JSON and their ids
    plain, with_it = get_config("tiny"), get_config("tiny", temporal_prediction=True)
    assert "temporal_prediction" not in plain.to_dict()
    assert with_it.to_dict()["temporal_prediction"] is True
    assert ModelConfig.from_json(with_it.to_json()) == with_it


def test_paper_size_config_matches_elic():
    cfg = get_config("elic")
    assert (cfg.N, cfg.M, cfg.groups, cfg.attention) == (192, 320, (16, 16, 32, 64, 192), True)
