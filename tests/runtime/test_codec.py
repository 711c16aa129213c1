"""stcm.Codec end to end: exact latent round trips, determinism, series, and bad input."""
import dataclasses
import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import make_smooth_image
from stcm.errors import (ConfigError, CorruptError, DataError, ModelMismatchError,
                         NotStcmFileError, TruncatedError)
from stcm.bands import denormalize, from_band_groups
from stcm.models.codec import STCM
from stcm.config import CONTEXTS, get_config
from stcm.models.revisit import synthetic_revisit
from stcm.runtime.codec import Codec, _Reference
from stcm.runtime.container import KIND_Y, read_container, write_container
from stcm.runtime.tiling import TileGrid


def _model(seed=0, **overrides) -> STCM:
    torch.manual_seed(seed)
    return STCM(get_config("tiny", **overrides)).eval()


def _image(bands, h, w, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    x = make_smooth_image(rng, bands, h, w)
    if dtype == np.uint8:
        return np.rint(x * 255).astype(np.uint8)
    if dtype == np.uint16:
        return np.rint(300 + x * 9000).astype(np.uint16)
    return (x * 3 - 1).astype(dtype)


@pytest.fixture(scope="module")
def codec():
    return Codec(_model(), tile_size=3)


@pytest.mark.parametrize("context", CONTEXTS)
def test_decoder_reproduces_the_encoders_latent_exactly(context):
    codec = Codec(_model(context=context), tile_size=3)
    image = _image(3, 70, 90)
    data, enc_latents = codec._compress(image, 0.6, None, None, None)
    decoded, dec_latents = codec._decompress(data, None)
    for a, b in zip(enc_latents, dec_latents):
        assert np.array_equal(a, b)
    # and the pixels are exactly g_s of that latent, denormalised
    x_hat = codec.model.g_s(torch.from_numpy(enc_latents[0]))[0, :, :70, :90].clamp(0, 1).detach().numpy()
    expected = denormalize(from_band_groups(x_hat[None], 3),
                           _norm(decoded.header.normalization))
    assert np.array_equal(decoded.pixels, expected)


def _norm(d):
    from stcm.bands import BandNormalization

    return BandNormalization.from_dict(d)


@pytest.mark.parametrize("bands,h,w,dtype", [(1, 17, 23, np.uint8), (4, 33, 70, np.uint16),
                                              (5, 64, 64, np.uint16), (2, 40, 20, np.float32)])
def test_any_shape_band_count_and_dtype_round_trip(codec, bands, h, w, dtype):
    image = _image(bands, h, w, dtype)
    back = codec.decompress(codec.compress(image, 0.9))
    assert back.shape == image.shape and back.dtype == image.dtype
    # Each band comes back inside its own value range (the per-band normalisation is
    # restored, not the dtype's range), whatever this untrained model's fidelity.
    axes = (1, 2)
    assert np.all(back.min(axis=axes) >= image.min(axis=axes))
    assert np.all(back.max(axis=axes) <= image.max(axis=axes))
    assert np.isfinite(back.astype(np.float64)).all()


def test_more_quality_costs_more_bytes(codec):
    image = _image(3, 64, 64)
    sizes = [len(codec.compress(image, q)) for q in (0.0, 0.5, 1.0)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_the_latent_decodes_identically_in_a_one_thread_process(tmp_path):
    # The built-in (trained) model, decoded here on the suite's threads and in a fresh
    # one-thread process: the latent is the guarantee (exact entropy path). Pixels come out
    # of the float g_s and may differ by a level (benchmarks/pixel_determinism.py), so they
    # are not compared.
    codec = Codec(tile_size=2)
    image = _image(3, 64, 96, seed=5)
    data = codec.compress(image, 0.8)
    (tmp_path / "img.stcm").write_bytes(data)
    _, latents = codec._decompress(data, None)
    np.save(tmp_path / "here.npy", np.concatenate(latents, axis=1))
    script = (
        "import sys, numpy as np, torch; torch.set_num_threads(1);"
        "from stcm.runtime.codec import Codec;"
        "c = Codec(tile_size=2);"
        f"_, lat = c._decompress(open(r'{tmp_path / 'img.stcm'}', 'rb').read(), None);"
        f"sys.exit(0 if np.array_equal(np.concatenate(lat, axis=1), "
        f"np.load(r'{tmp_path / 'here.npy'}')) else 3)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_batched_float_step_calls_are_refused():
    with pytest.raises(ConfigError, match="tile_batch"):
        Codec(_model(exact=False), tile_batch=4)


@pytest.mark.parametrize("context", ["diag", "checkerboard"])
def test_exact_streams_do_not_depend_on_tiles_per_call_or_decoder(context):
    model = _model(context=context)
    # A 128^2 canvas: an 8x8 latent in tiles of 3 leaves partial edge tiles, which a batch
    # must not code with another tile's validity mask.
    image = _image(3, 70, 90, seed=5)
    one = Codec(model, tile_size=3).compress(image, 0.8)
    assert Codec(model, tile_size=3, tile_batch=5).compress(image, 0.8) == one
    assert Codec(model, tile_size=3, tile_batch=64).compress(image, 0.8) == one
    naive = Codec(model, tile_size=3, naive=True)
    assert naive.compress(image, 0.8) == one  # naive recompute and wavefront: same bits
    batched = Codec(model, tile_size=3, tile_batch=7)
    assert np.array_equal(batched.decompress(one), naive.decompress(one))


def test_series_round_trip_uses_the_first_image_as_reference():
    codec = Codec(_model(seed=1), tile_size=4)
    rng = np.random.default_rng(0)
    first = _image(3, 64, 64, seed=2)
    later = [np.rint(synthetic_revisit(first / 255.0, rng) * 255).astype(np.uint8)
             for _ in range(2)]
    # "on": an untrained model's reference may save nothing, and auto then codes alone.
    blobs = codec.compress_series([first, *later], 0.7, temporal="on")
    decoded = codec.decompress_series(blobs)
    assert all(d.shape == first.shape for d in decoded)
    # each later image equals decoding it alone with the reference given
    assert np.array_equal(codec.decompress(blobs[1], reference=blobs[0]), decoded[1])
    with pytest.raises(ModelMismatchError, match="reference"):
        codec.decompress(blobs[2])
    with pytest.raises(ModelMismatchError):
        codec.decompress(blobs[2], reference=blobs[1])
    # the reference really conditions the entropy model: alone, the same image codes differently
    assert codec.compress(later[0], 0.7) != blobs[1]


def test_corrupted_truncated_and_foreign_inputs_fail_clearly(codec):
    data = bytearray(codec.compress(_image(3, 48, 48), 0.7))
    with pytest.raises(TruncatedError):
        codec.decompress(bytes(data[:-5]))
    flipped = bytearray(data)
    flipped[-3] ^= 0x40  # inside the last y stream
    with pytest.raises(CorruptError, match="crc|CRC|checksum"):
        codec.decompress(bytes(flipped))
    with pytest.raises(NotStcmFileError):
        codec.decompress(b"\x89PNG\r\n\x1a\n" + bytes(100))
    other = Codec(_model(seed=9), tile_size=3)
    with pytest.raises(ModelMismatchError):
        other.decompress(bytes(data))


def test_bad_arrays_are_refused(codec):
    with pytest.raises(DataError):
        codec.compress(np.zeros((0, 5, 5), np.uint8))
    with pytest.raises(DataError, match="int8"):
        codec.compress(np.zeros((3, 8, 8), np.int8))
    with pytest.raises(ConfigError, match="quality"):
        codec.compress(np.zeros((3, 8, 8), np.uint8), quality=2)
    with pytest.raises(DataError, match="NaN/inf"):
        codec.compress(np.full((1, 8, 8), np.inf, np.float32))
    # NaN is a missing sample (restored as NaN) unless another value is the nodata.
    from stcm.runtime.georeference import Georeference

    with pytest.raises(DataError, match="NaN/inf"):
        codec.compress(np.full((1, 8, 8), np.nan, np.float32),
                       georef=Georeference(None, None, -9999.0))


def test_stream_sizes_match_the_estimated_rate_of_the_coded_latent(trained_tiny):
    """ANS overhead: bytes written vs the sum of -log2 likelihoods of the very symbols coded
    (continuous Gaussians with the step programs' means and scales, and z's density)."""
    from stcm.models.codec import pad_image
    from stcm.models.gaussian import gaussian_likelihood
    from stcm.runtime.scheduler import code_z

    codec = Codec(trained_tiny, tile_size=64)
    model = codec.model
    rng = np.random.default_rng(7)
    x = torch.from_numpy(make_smooth_image(rng, 3, 256, 256)[None].astype(np.float32))
    x = (x + 0.2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0))) / 1.2
    with torch.no_grad():
        gain_enc, _ = model.gain.gains(torch.tensor([1.0]))
        y = model.g_a(pad_image(x)) * gain_enc
        z = model.h_a(y)
        z_hat, z_stream, _ = code_z(codec.z_coder, z.numpy(), codec.medians)
        z_hat = torch.from_numpy(z_hat)
        hyper = model.h_s(z_hat)
        coded = codec.scheduler.encode(y.numpy(), hyper.numpy(), None)
        y_hat, y_streams = torch.from_numpy(coded.y_hat), coded.streams
        means, scales = model.entropy_parameters(y_hat, hyper, None)
        y_bits = -torch.log2(gaussian_likelihood(y_hat, means, scales, model.cfg.scale_min)).sum()
        z_bits = -torch.log2(model.entropy_bottleneck.likelihood(z_hat)).sum()
    estimate = float(y_bits + z_bits)
    written = 8 * (len(z_stream) + sum(len(s) for s in y_streams))
    assert estimate > 20_000, "the check needs a rate well above the per-stream word overhead"
    print(f"ANS overhead: {written} bits written, {estimate:.0f} estimated "
          f"({100 * (written / estimate - 1):+.2f}%)")
    assert abs(written / estimate - 1) < 0.02, f"{written} bits written vs {estimate:.0f} estimated"


def test_an_unrelated_reference_costs_no_more_than_coding_alone(trained_tiny):
    codec = Codec(trained_tiny, tile_size=4)
    reference = codec.compress(_image(3, 256, 256, seed=2), 0.7)
    unrelated = _image(3, 256, 256, seed=7)
    alone = codec.compress(unrelated, 0.7)
    auto = codec.compress(unrelated, 0.7, reference=reference)
    always = codec.compress(unrelated, 0.7, reference=reference, temporal="on")
    # By construction the streams cost no more than coding alone or with the reference
    # everywhere; the file adds the reference id, one flag bit per tile and at most a byte of
    # record length: well under 0.5 % of any image of 8 KB or more (this one is ~2.6 KB).
    # Unless the image is written alone: that is chosen on the whole file's length, so its
    # streams may be a few bytes above the reference's when the id and grid cost more.
    payload = lambda data: sum(e.length for e in read_container(data).entries)  # noqa: E731
    header = read_container(auto).header
    bitmap = -(-header.tiles // 8)
    if header.reference_id is None:
        assert auto == alone and len(auto) <= len(always)
    else:
        assert payload(auto) <= min(payload(alone), payload(always))
    assert len(auto) <= len(alone) + 16 + bitmap + 1
    assert len(auto) <= len(always) + bitmap + 1
    if payload(always) > payload(alone):
        # The reference hurts: some tiles went intra, or the whole image was written alone
        # (no reference id, bitmap or grid; what a wholly useless reference gets).
        assert header.intra_tiles or (header.reference_id is None and auto == alone)
    assert np.array_equal(codec.decompress(auto, reference=reference),
                          codec.decompress_series([reference, auto])[1])


def test_mixed_tile_modes_decode_to_the_encoders_latent(monkeypatch):
    codec = Codec(_model(seed=1), tile_size=2)  # 64x64 -> 4x4 latent -> 4 tiles
    first = _image(3, 64, 64, seed=2)
    later = np.rint(synthetic_revisit(first / 255.0, np.random.default_rng(0)) * 255
                    ).astype(np.uint8)
    reference, ref_latents = codec._compress(first, 0.7, None, None, None)

    def alternate(self, y, hyper, ref, gain, bar, footprint):
        intra = [t % 2 == 0 for t in range(4)]
        coded = self.scheduler.encode(y, hyper, ref, intra, coded=footprint, gain=gain)
        # The all-alone choice, made too large to win, so that the mixed container is kept.
        return coded, intra, dataclasses.replace(coded, streams=[bytes(1 << 16)] * 4)

    monkeypatch.setattr(Codec, "_encode_choosing_modes", alternate)
    ref_id = hashlib.sha256(reference).digest()
    ref = _Reference(ref_latents, first.shape[1:])
    data, enc_latents = codec._compress(later, 0.7, None, ref, ref_id)
    decoded, dec_latents = codec._decompress(data, ref, reference)
    assert decoded.header.intra_tiles == (0, 2)
    assert np.array_equal(enc_latents[0], dec_latents[0])
    # The flags matter: with every tile using the reference the same image codes otherwise.
    on, _ = codec._compress(later, 0.7, None, ref, ref_id, temporal="on")
    assert on != data


def test_every_stream_carries_the_checksum_of_its_symbols(codec):
    # Two band groups; 64 x 128 pixels: a footprint of the whole latent, so that the same
    # streams also make a valid 2.3 file below (one that codes every position).
    data = codec.compress(_image(5, 64, 128), 0.5)
    c = read_container(data)
    assert data[4:6] == b"\x03\x01"
    assert len(c.checksums) == len(c.entries) == 2 * (1 + c.header.tiles)
    streams = {e.key: c.stream(*e.key) for e in c.entries}
    for i, entry in enumerate(c.entries):  # each stream is verified against its own value
        sums = {e.key: v ^ (j == i) for j, (e, v) in enumerate(zip(c.entries, c.checksums))}
        with pytest.raises(CorruptError, match=f"the {'zy'[entry.kind]} stream decodes to "
                                               "symbols whose checksum"):
            codec.decompress(write_container(c.header, streams, sums))
    # The same streams without checksums (a 2.3 file, which codes every latent position)
    # decode, unverified, to the same pixels.
    plain = write_container(c.header, streams)
    assert plain[4:6] == b"\x02\x03"
    assert len(data) - len(plain) - 4 * len(c.entries) in (0, 1)  # and the record length's varint
    assert np.array_equal(codec.decompress(plain), codec.decompress(data))


def test_unknown_temporal_mode_is_refused(codec):
    with pytest.raises(ConfigError, match="temporal must be one of"):
        codec.compress(_image(3, 32, 32), 0.5, temporal="sometimes")


def test_nodata_samples_decode_exactly_and_do_not_cost_the_valid_pixels():
    """Issue 17: nodata was coded as data (its value in the band range, its edges smeared
    into valid pixels, most nodata samples decoding to other values)."""
    import stcm
    from stcm.runtime.georeference import Georeference
    from stcm.runtime.imageio import read_raster

    codec = Codec()  # the built-in model: PSNR comparisons need a trained one
    image = read_raster(stcm.SAMPLES_DIR / "sentinel2_b234_8_uint16.tif").pixels
    yy, xx = np.mgrid[0:image.shape[1], 0:image.shape[2]]
    hole = yy + xx < 69  # a scene edge, ~8 % of the pixels
    holed = image.copy()
    holed[:, hole] = 0
    valid = ~np.broadcast_to(hole, image.shape)

    def psnr(data):
        back = codec.decompress(data).astype(float)
        mse = np.mean((back[valid] - image[valid]) ** 2)
        return 10 * np.log10(float(image.max()) ** 2 / mse), back

    masked = codec.compress(holed, 0.75, georef=Georeference(None, None, 0.0))
    as_data = codec.compress(holed, 0.75)
    (with_mask, back), (without, _) = psnr(masked), psnr(as_data)
    np.testing.assert_array_equal(back == 0, ~valid)
    # Measured: 43.93 vs 41.99 dB for 22 % more bytes; at equal PSNR of the valid pixels
    # the mask saves ~20 % (docs/format.md, mask).
    assert with_mask > without + 1.0
    assert read_container(masked).header.mask is not None


def test_positions_over_padding_away_from_the_image_get_no_symbols(monkeypatch):
    """Format 3.0: latent cells that hold only replicated padding, farther than
    ``FOOTPRINT_MARGIN`` pixels from the image, are not coded (they decode to their predicted
    mean): their tiles' streams are empty, the rest cost fewer bytes than coding everything,
    and encoder and decoder agree on every latent value."""
    import stcm.runtime.codec as codec_module
    from stcm.runtime.header import footprint_of

    codec = Codec(_model(seed=3), tile_size=2)
    image = _image(3, 70, 90, seed=4)  # a 128 x 128 canvas: an 8 x 8 latent, 4 x 4 tiles
    data, latents = codec._compress(image, 0.6, None, None, None)
    c = read_container(data)
    assert c.coded_box == footprint_of(0, 0, 70, 90) == (0, 0, 5, 7)  # (70 + 8) / 16, ...
    sizes = {e.tile: e.length for e in c.entries if e.kind == KIND_Y}
    boxes = TileGrid(*c.header.latent_shape, 2).boxes()
    outside = [t for t, (r, col, _, _) in enumerate(boxes) if r >= 5 or col >= 7]
    assert outside == [12, 13, 14, 15]  # tile row 3: latent rows 6 and 7
    assert all(sizes[t] == 0 for t in outside), sizes
    assert all(sizes[t] > 0 for t in sizes if t not in outside)
    np.testing.assert_array_equal(codec._decompress(data, None)[1][0], latents[0])
    # Coding every position (what format 2.4 did) costs more bytes, with the same header.
    monkeypatch.setattr(codec_module, "footprint_of", lambda *args: (0, 0, 8, 8))
    everything = codec.compress(image, 0.6)
    assert len(everything) > len(data) + 40
