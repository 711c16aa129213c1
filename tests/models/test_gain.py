"""Quality interpolation: the product of encoder and decoder gain follows the level products,
training and coding share the rule, and the coding gains are float64-deterministic."""
import numpy as np
import pytest
import torch

from stcm.models.gain import GainUnits, interpolate_gains, interpolate_levels
from stcm.quality import coding_gains


def _levels(seed=0, levels=6, channels=16):
    rng = np.random.default_rng(seed)
    enc = np.exp(rng.normal(0, 1, (levels, channels))).astype(np.float32)
    dec = np.exp(rng.normal(0, 1, (levels, channels))).astype(np.float32)
    return enc, dec


@pytest.mark.parametrize("quality", [0.0, 0.1, 0.33, 0.5, 0.77, 0.9, 1.0])
def test_gain_product_is_the_interpolation_of_the_level_products(quality):
    enc, dec = _levels()
    gain_enc, gain_dec = coding_gains(enc, dec, quality)
    wanted = interpolate_levels(torch.from_numpy(enc.astype(np.float64) * dec),
                                torch.tensor([quality], dtype=torch.float64))[0].numpy()
    np.testing.assert_allclose(gain_enc.astype(np.float64) * gain_dec, wanted, rtol=2e-7)
    # The old rule (enc and dec interpolated separately) does not keep the product.
    if quality not in (0.0, 1.0) and quality * 5 != round(quality * 5):
        separate = interpolate_levels(torch.from_numpy(dec), torch.tensor([quality]))[0].numpy()
        assert np.abs(gain_enc * separate / wanted - 1).max() > 1e-3


def test_trained_levels_code_with_exactly_their_pinned_gains():
    enc, dec = _levels(1)
    for level in range(6):
        gain_enc, gain_dec = coding_gains(enc, dec, level / 5)
        assert np.array_equal(gain_enc, enc[level])
        np.testing.assert_allclose(gain_dec, dec[level], rtol=1e-7)


def test_training_and_coding_use_the_same_interpolation():
    units = GainUnits((0.002, 0.01, 0.05, 0.4), 12)
    with torch.no_grad():
        units.log_enc.normal_(0, 0.5)
        units.log_dec.normal_(0, 0.5)
    enc_levels, dec_levels = units.level_gains()
    qualities = torch.tensor([0.0, 0.21, 0.5, 0.64, 0.999, 1.0])
    with torch.no_grad():
        train_enc, train_dec = units.gains(qualities)
    for i, q in enumerate(qualities.tolist()):
        gain_enc, gain_dec = coding_gains(enc_levels, dec_levels, q)
        np.testing.assert_allclose(train_enc[i, :, 0, 0].numpy(), gain_enc, rtol=1e-5)
        np.testing.assert_allclose(train_dec[i, :, 0, 0].numpy(), gain_dec, rtol=1e-5)


def test_interpolated_gains_carry_gradients_to_both_level_tables():
    enc = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    dec = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    gain_enc, gain_dec = interpolate_gains(enc + 0.5, dec + 0.5, torch.tensor([0.3, 0.8]))
    (gain_enc.sum() + gain_dec.sum()).backward()
    assert enc.grad.abs().sum() > 0 and dec.grad.abs().sum() > 0


def test_coding_gains_are_the_same_bits_for_the_same_inputs_and_reject_bad_shapes():
    enc, dec = _levels(2)
    first = coding_gains(enc, dec, 0.4321)
    again = coding_gains(enc.copy(), dec.copy(), 0.4321)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(first, again))
    assert all(g.dtype == np.float32 for g in first)
    with pytest.raises(ValueError, match="level gains"):
        coding_gains(enc, dec[:, :3], 0.5)
