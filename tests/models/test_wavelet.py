"""The Haar split is orthonormal and its merge inverts it; the HL backbone keeps the latent
contract of the ELIC one and puts the low band in its low branch."""
import pytest
import torch

from stcm.errors import ConfigError
from stcm.models.checkpoint import init_weights, save_checkpoint
from stcm.models.codec import STCM
from stcm.config import get_config
from stcm.models.wavelet import HaarMerge, HaarSplit, haar_merge, haar_split


@pytest.mark.parametrize("channels,h,w", [(1, 2, 2), (3, 64, 48), (4, 10, 6)])
def test_merge_inverts_split_and_the_split_keeps_the_energy(channels, h, w):
    x = torch.rand(2, channels, h, w, dtype=torch.float64)
    low, high = haar_split(x)
    assert low.shape == (2, channels, h // 2, w // 2)
    assert high.shape == (2, 3 * channels, h // 2, w // 2)
    torch.testing.assert_close(haar_merge(low, high), x, rtol=0, atol=1e-12)
    energy = low.pow(2).sum() + high.pow(2).sum()
    torch.testing.assert_close(energy, x.pow(2).sum())


def test_bands_are_the_haar_averages_and_differences():
    x = torch.tensor([[[[1.0, 3.0], [5.0, 11.0]]]])
    low, high = haar_split(x)
    a, b, c, d = 1.0, 3.0, 5.0, 11.0
    assert low.flatten().tolist() == [(a + b + c + d) / 2]
    assert high.flatten().tolist() == [(a - b + c - d) / 2, (a + b - c - d) / 2,
                                       (a - b - c + d) / 2]
    flat = torch.full((1, 2, 4, 4), 0.25)
    assert torch.equal(haar_split(flat)[1], torch.zeros(1, 6, 2, 2))


def test_modules_match_the_functions_and_store_nothing_in_checkpoints():
    x = torch.rand(1, 3, 8, 8)
    split, merge = HaarSplit(3), HaarMerge(3)
    assert all(torch.equal(a, b) for a, b in zip(split(x), haar_split(x)))
    assert torch.allclose(merge(*split(x)), x, atol=1e-6)
    assert split.state_dict() == {} and merge.state_dict() == {}
    with pytest.raises(ValueError, match="3x"):
        haar_merge(torch.zeros(1, 3, 2, 2), torch.zeros(1, 6, 2, 2))


@pytest.fixture(scope="module")
def hl_tiny():
    torch.manual_seed(0)
    return STCM(get_config("tiny", backbone="hl", high_width=16)).eval()


def test_hl_backbone_gives_the_same_latent_contract_as_elic(hl_tiny):
    elic = STCM(get_config("tiny")).eval()
    x = torch.rand(2, 3, 70, 50)
    with torch.no_grad():
        ours, theirs = hl_tiny(x, 0.5), elic(x, 0.5)
    assert ours.latent.shape == theirs.latent.shape == (2, 32, 8, 4)
    assert ours.x_hat.shape == x.shape and torch.isfinite(ours.bpp()).all()
    # The hyperprior and context model are the ELIC ones: their weights load as they are.
    shared = {k: v for k, v in elic.state_dict().items()
              if not k.startswith(("g_a.", "g_s."))}
    missing, unexpected = hl_tiny.load_state_dict(shared, strict=False)
    assert not unexpected and all(k.startswith(("g_a.", "g_s.")) for k in missing)


def test_init_from_the_other_backbone_lends_all_but_the_main_transform(tmp_path):
    torch.manual_seed(0)
    elic = STCM(get_config("tiny"))
    save_checkpoint(elic, tmp_path / "elic.safetensors")
    torch.manual_seed(1)
    hl = STCM(get_config("tiny", backbone="hl", high_width=16))
    fresh_g_a = {k: v.clone() for k, v in hl.state_dict().items() if k.startswith("g_a.")}
    assert init_weights(hl, tmp_path / "elic.safetensors") == ["g_a", "g_s"]
    theirs = elic.state_dict()
    for k, v in hl.state_dict().items():
        if k.startswith(("g_a.", "g_s.")):
            continue
        assert torch.equal(v, theirs[k]), k
    assert all(torch.equal(v, hl.state_dict()[k]) for k, v in fresh_g_a.items())
    # Same backbone: every weight loads and nothing starts fresh.
    same = STCM(get_config("tiny"))
    assert init_weights(same, tmp_path / "elic.safetensors") == []
    # Any other difference (here the latent width) is refused with its name.
    with pytest.raises(ConfigError, match="'M'"):
        init_weights(STCM(get_config("tiny", backbone="hl", M=48, groups=(8, 8, 32))),
                     tmp_path / "elic.safetensors")


def test_hl_low_branch_alone_sees_the_low_band(hl_tiny):
    # A change of only the high bands (a checker pattern of zero mean per 2x2 cell) leaves
    # the low branch's output unchanged and moves the high branch's.
    x = torch.rand(1, 3, 64, 64)
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(32, 32) * 0.05
    g_a = hl_tiny.g_a
    with torch.no_grad():
        (low0, high0), (low1, high1) = g_a.split(x), g_a.split(x + checker)
        torch.testing.assert_close(g_a.low(low0), g_a.low(low1))
        assert not torch.allclose(g_a.high(high0), g_a.high(high1))


def test_hl_trains_end_to_end():
    torch.manual_seed(1)
    model = STCM(get_config("tiny", backbone="hl")).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(2, 3, 64, 64)
    losses = []
    for _ in range(5):
        out = model(x, 1.0)
        loss = out.bpp().mean() + 100 * torch.mean((out.x_hat - x) ** 2)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in model.g_a.parameters())
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_hl_config_rejects_what_it_does_not_have():
    with pytest.raises(ConfigError, match="backbone"):
        get_config("tiny", backbone="swin")
    with pytest.raises(ConfigError, match="attention"):
        get_config("hl", attention=True)
    with pytest.raises(ConfigError, match="high_width"):
        get_config("hl-small", high_width=-1)
    assert get_config("tiny", backbone="hl").high_features == get_config("tiny").N
    assert get_config("hl-small").high_features == 64
