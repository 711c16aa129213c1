"""The latent shift (``ModelConfig.latent_shift``): exact integer tables that move a reference's
latent by a few pixels, fitted from the model's own transforms, stored with the checkpoint
and the engine, signalled by a shifted reference grid (format 3.1), and applied to the same
bits by encoder and decoder on every backend."""
import dataclasses
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_smooth_image
from stcm.cli import main as cli
from stcm.errors import CheckpointError, ConfigError, CorruptError
from stcm.export.onnx import export_engine
from stcm.models.checkpoint import load_checkpoint, save_checkpoint
from stcm.models.latent_shift import _latents, fit_latent_shift, with_latent_shift
from stcm.runtime.codec import Codec, _Reference
from stcm.runtime import container
from stcm.runtime.container import read_container
from stcm.runtime.describe import describe, format_description
from stcm.runtime.georeference import Georeference
from stcm.runtime.grids import reference_grid, refine_translation
from stcm.runtime.header import ReferenceGrid
from stcm.shift_tables import (SHIFT_INPUT_BITS, SHIFT_PHASES, SHIFT_TAPS, SHIFT_WEIGHT_BITS,
                               identity_shift_table, shift_latent, split_move)
from stcm.tables import CodingTables

QUALITY = 0.7
GRID = (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)


def _geo(dx_px=0, dy_px=0):
    a, b, c, d, e, f = GRID
    return Georeference("EPSG:32633", (a, b, c + 10.0 * dx_px, d, e, f - 10.0 * dy_px), None)


def _fit_images(n=3, size=300):
    rng = np.random.default_rng(11)
    return [np.rint(make_smooth_image(rng, 3, size, size).clip(0, 1) * 255).astype(np.uint8)
            for _ in range(n)]


@pytest.fixture(scope="module")
def fitted(trained_tiny, tmp_path_factory):
    """(tiny model with fitted tables: checkpoint, engine; the unfitted checkpoint)."""
    torch.manual_seed(0)
    model, _ = load_checkpoint(trained_tiny)
    rows, cols = fit_latent_shift(model, _fit_images(), crops_per_image=2)
    folder = tmp_path_factory.mktemp("latent_shift")
    path = save_checkpoint(with_latent_shift(model, rows, cols), folder / "model.safetensors")
    engine = folder / "engine"
    export_engine(path, engine, progress=False)
    return path, engine, trained_tiny


def _pair(dx, dy, size=160):
    """A scene and a revisit whose pixel (c, r) is the scene's (c + dx, r + dy)."""
    rng = np.random.default_rng(3)
    scene = np.rint(make_smooth_image(rng, 3, size + 80, size + 80).clip(0, 1) * 255)
    scene = scene.astype(np.uint8)
    return scene[:, 40:40 + size, 40:40 + size], scene[:, 40 + dy:40 + dy + size,
                                                      40 + dx:40 + dx + size]


# -- the exact application --------------------------------------------------------------------
def _tables(rng, channels):
    shape = (SHIFT_PHASES, channels, channels, SHIFT_TAPS)
    return (rng.integers(-3000, 3000, shape).astype(np.int16),
            rng.integers(-3000, 3000, shape).astype(np.int16))


def _int_reference(latent, move, rows, cols):
    """The same map in Python-int arithmetic (no float anywhere)."""
    units = np.clip(np.rint(latent.astype(np.float64) * 2 ** SHIFT_INPUT_BITS),
                    -(2 ** 20 - 1), 2 ** 20 - 1).astype(object)
    half = SHIFT_PHASES // 2
    for axis, m, table in ((1, move[0], rows), (2, move[1], cols)):
        if not m:
            continue
        w = table[m + half].astype(object)
        pad = [(0, 0)] * 3
        pad[axis] = (SHIFT_TAPS // 2, SHIFT_TAPS // 2)
        padded = np.pad(units, pad, mode="edge")
        out = np.zeros(units.shape, object)
        for t in range(SHIFT_TAPS):
            win = np.take(padded, np.arange(t, t + units.shape[axis]), axis=axis)
            out += np.tensordot(w[:, :, t], win, axes=(1, 0))
        # round half to even of out / 2^bits, in integers
        scale = 2 ** SHIFT_WEIGHT_BITS
        flat = [(v // scale) + (1 if (2 * (v % scale) > scale or (2 * (v % scale) == scale
                                                               and (v // scale) % 2)) else 0)
                for v in out.ravel()]
        units = np.clip(np.array(flat, object).reshape(out.shape), -(2 ** 20 - 1), 2 ** 20 - 1)
    return (units.astype(np.float64) / 2 ** SHIFT_INPUT_BITS).astype(np.float32)


@pytest.mark.parametrize("move", [(0, 0), (-2, 1), (7, -8), (0, 5), (-8, 0)])
def test_the_shift_is_exact_integer_arithmetic(move):
    rng = np.random.default_rng(sum(move) + 20)
    rows, cols = _tables(rng, 24)
    latent = (rng.standard_normal((24, 7, 9)) * 40).astype(np.float32)
    latent[0, 0, 0] = 5000.0  # beyond the clip: still deterministic
    got = shift_latent(latent, move, rows, cols)
    assert got.dtype == np.float32
    assert np.array_equal(got, _int_reference(latent, move, rows, cols))
    # Row-major or column-major copies of the input give the same bits.
    assert np.array_equal(got, shift_latent(np.asfortranarray(latent), move, rows, cols))


def test_identity_tables_move_nothing_and_bad_arguments_are_refused():
    eye = identity_shift_table(4)
    latent = np.rint(np.random.default_rng(0).standard_normal((4, 5, 6)) * 64) / 64
    latent = latent.astype(np.float32)
    assert np.array_equal(shift_latent(latent, (3, -4), eye, eye), latent)
    with pytest.raises(ValueError, match="moves"):
        shift_latent(latent, (8, 0), eye, eye)
    with pytest.raises(ValueError, match="int16"):
        shift_latent(latent, (1, 0), eye.astype(np.int32), eye)
    with pytest.raises(ValueError, match="int16"):
        shift_latent(latent[:3], (1, 0), eye, eye)


def test_moves_split_into_whole_positions_and_a_remainder():
    for pixels in range(-100, 100):
        whole, rest = split_move(pixels)
        assert 16 * whole + rest == pixels and -8 <= rest < 8


# -- grids and the header ---------------------------------------------------------------------
def test_a_model_with_tables_keeps_the_image_on_its_grid():
    grid = reference_grid((1.0, 0.0, 21.3, 0.0, 1.0, -6.0), latent_shift=True)
    assert grid == ReferenceGrid((0, 0), (1.0, 0.0, 21.0, 0.0, 1.0, -6.0), shifted=True)
    whole = reference_grid((1.0, 0.0, 32.0, 0.0, 1.0, -16.0), latent_shift=True)
    assert whole == ReferenceGrid((0, 0), (1.0, 0.0, 32.0, 0.0, 1.0, -16.0))  # a copy
    assert reference_grid((1.0, 0.0, 0.4, 0.0, 1.0, -0.3), latent_shift=True) is None
    # Without tables: the canvas, as before.
    assert reference_grid((1.0, 0.0, 21.3, 0.0, 1.0, -6.0)).origin == (10, 5)


def test_a_shifted_grid_round_trips_and_bad_ones_are_corrupt():
    grid = ReferenceGrid((0, 0), (1.0, 0.0, -3.0, 0.0, 1.0, 17.0), shifted=True)
    raw = grid.to_bytes()
    assert raw[0] == 0x80 and raw[1] == 0
    from stcm.runtime.fields import ByteReader
    assert ReferenceGrid.from_reader(ByteReader(raw, 0, len(raw))) == grid
    for origin, mapping in (((1, 0), (1.0, 0.0, -3.0, 0.0, 1.0, 17.0)),  # a canvas too
                            ((0, 0), (1.0, 0.0, -3.5, 0.0, 1.0, 17.0)),  # not whole pixels
                            ((0, 0), (2.0, 0.0, -3.0, 0.0, 1.0, 17.0)),  # not a translation
                            ((0, 0), (1.0, 0.0, -16.0, 0.0, 1.0, 32.0))):  # whole positions
        with pytest.raises(CorruptError):
            ReferenceGrid(origin, mapping, shifted=True)


def test_phase_correlation_corrects_a_georeferenced_translation():
    rng = np.random.default_rng(4)
    scene = make_smooth_image(rng, 3, 400, 400) + 0.05 * rng.standard_normal((3, 400, 400))
    reference = scene[:, 40:340, 40:340]
    image = scene[:, 40 - 2:338, 40 + 3:343]  # pixel (c, r) = reference's (c + 3, r - 2)
    read = lambda rows, cols: image[:, rows[0]:rows[1], cols[0]:cols[1]]  # noqa: E731
    got = refine_translation((1.0, 0.0, 0.0, 0.0, 1.0, 0.0), reference, image.shape[1:], read)
    assert got[2] == pytest.approx(3, abs=0.25) and got[5] == pytest.approx(-2, abs=0.25)
    # A georeference 16 px off the truth: corrected within the overlap it names.
    got = refine_translation((1.0, 0.0, 16.0, 0.0, 1.0, 0.0), reference, image.shape[1:], read)
    assert got[2] == pytest.approx(3, abs=0.25) and got[5] == pytest.approx(-2, abs=0.25)
    unrelated = make_smooth_image(np.random.default_rng(9), 3, 298, 300)
    same = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert refine_translation(same, reference, unrelated.shape[1:],
                              lambda r, c: unrelated[:, r[0]:r[1], c[0]:c[1]]) == same


# -- the fit ------------------------------------------------------------------------------------
def test_the_fitted_tables_move_a_latent_towards_the_moved_image_s(fitted, trained_tiny):
    path, _, _ = fitted
    model, _ = load_checkpoint(path)
    rows, cols = model.latent_shift.tables()
    scene = _fit_images(1, 340)[0]
    groups = torch.from_numpy(scene[None].astype(np.float32) / 255)
    base = _latents(model, groups[..., 40:296, 40:296], 0.5)[0][0].float().numpy()
    moved = _latents(model, groups[..., 40 - 3:293, 40 + 5:301], 0.5)[1][0].float().numpy()
    shifted = shift_latent(base, (-3, 5), rows, cols)
    inner = (slice(None), slice(2, -2), slice(2, -2))
    err = lambda a: float(np.mean((a[inner] - moved[inner]) ** 2))  # noqa: E731
    assert err(shifted) < 0.7 * err(base)
    assert (rows[SHIFT_PHASES // 2] == model.latent_shift.rows[SHIFT_PHASES // 2].numpy()).all()


def test_tables_survive_fp16_checkpoints_and_engines(fitted, tmp_path):
    path, engine, _ = fitted
    model, _ = load_checkpoint(path)
    half = save_checkpoint(model, tmp_path / "half.safetensors", half=True)
    again, _ = load_checkpoint(half)
    assert again.latent_shift.rows.dtype == torch.int16
    assert torch.equal(again.latent_shift.rows, model.latent_shift.rows)
    assert torch.equal(again.latent_shift.cols, model.latent_shift.cols)
    tables = CodingTables.load(engine)
    assert np.array_equal(tables.shift_rows, model.latent_shift.rows.numpy())
    with pytest.raises(CheckpointError, match="latent shift"):
        dataclasses.replace(tables, shift_rows=None, shift_cols=None)
    with pytest.raises(ConfigError, match="latent_shift"):
        dataclasses.replace(model.cfg, exact=False)


def test_images_coded_alone_keep_their_streams(fitted):
    path, _, unfitted = fitted
    image = _pair(0, 0)[0]
    a, b = Codec(path).compress(image, QUALITY), Codec(unfitted).compress(image, QUALITY)
    ca, cb = read_container(a), read_container(b)
    assert ca.data[ca.payload_start:] == cb.data[cb.payload_start:]


# -- through the codec ------------------------------------------------------------------------
def test_a_revisit_a_few_pixels_off_decodes_exactly_on_every_backend(fitted, tmp_path):
    path, engine, _ = fitted
    first, later = _pair(dx=21, dy=-6)
    torch_codec, ort = Codec(path, tile_size=4), Codec(engine=engine, tile_size=4)
    georefs = [_geo(), _geo(21, -6)]
    reference = torch_codec.compress(first, QUALITY, georef=georefs[0])
    data = torch_codec.compress(later, QUALITY, georef=georefs[1], reference=reference,
                                temporal="on")
    assert ort.compress(later, QUALITY, georef=georefs[1], reference=reference,
                        temporal="on") == data
    header = read_container(data).header
    assert header.reference_grid == ReferenceGrid((0, 0), (1.0, 0.0, 21.0, 0.0, 1.0, -6.0),
                                                  shifted=True)
    assert read_container(data).version == (3, 1)
    (tmp_path / "later.stcm").write_bytes(data)
    text = format_description(describe(tmp_path / "later.stcm"))
    assert "grid      reference pixel = (1*col + 0*row + 21" in text
    assert "latent moved by the model's shift tables" in text
    # The decoders rebuild the encoder's latents exactly.
    ref_image, ref_latents = torch_codec._decompress(reference, None)
    ref = _Reference(ref_latents, first.shape[1:], header.reference_grid)
    _, enc = torch_codec._compress(later, QUALITY, georefs[1], ref,
                                   hashlib.sha256(reference).digest(), temporal="on")
    for codec in (torch_codec, ort, Codec(path, tile_size=4, tile_batch=3)):
        _, dec = codec._decompress(data, _Reference.decoded(ref_image, ref_latents), reference)
        assert all(np.array_equal(a, b) for a, b in zip(enc, dec))
    out = ort.decompress(data, reference=reference)
    assert out.shape == later.shape
    assert np.array_equal(out, ort.decompress_series([reference, data])[1])
    # Across backends the latents are equal (above); the float synthesis may move a pixel
    # by one level (docs/determinism.md).
    assert np.abs(out.astype(int) - torch_codec.decompress(data, reference=reference)).max() <= 1
    for col, row, w, h in [(0, 0, 33, 17), (100, 90, 60, 70), (159, 159, 1, 1)]:
        window = ort.decompress(data, reference=reference, window=(col, row, w, h))
        assert np.array_equal(window, out[:, row:row + h, col:col + w])
    # auto never costs more than coding alone.
    auto = torch_codec.compress(later, QUALITY, georef=georefs[1], reference=reference)
    assert len(auto) <= len(torch_codec.compress(later, QUALITY, georef=georefs[1]))


def test_a_3_0_file_cannot_hold_a_shifted_grid(fitted, monkeypatch):
    path, _, _ = fitted
    codec = Codec(path, tile_size=4)
    first, later = _pair(dx=5, dy=0)
    reference = codec.compress(first, QUALITY, georef=_geo())
    c = read_container(codec.compress(later, QUALITY, georef=_geo(5, 0), reference=reference,
                                      temporal="on"))
    assert c.header.reference_grid.shifted
    streams = {(e.band_group, e.kind, e.tile): c.stream(e.band_group, e.kind, e.tile)
               for e in c.entries}
    checksums = {(e.band_group, e.kind, e.tile): v for e, v in zip(c.entries, c.checksums)}
    monkeypatch.setattr(container, "FORMAT_VERSION", (3, 0))
    old = container.write_container(c.header, streams, checksums)
    assert old[4:6] == bytes((3, 0))
    with pytest.raises(CorruptError, match="shifted reference grid"):
        read_container(old)


def test_fit_shift_cli_writes_a_checkpoint_with_tables(trained_tiny, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(_fit_images(2, 280)):
        Image.fromarray(np.moveaxis(image, 0, -1), "RGB").save(folder / f"{i}.png")
    out = tmp_path / "fitted.safetensors"
    assert cli(["fit-shift", str(trained_tiny), "--data", str(folder), "--out", str(out),
                "--crops", "1"]) == 0
    model, meta = load_checkpoint(out)
    assert model.cfg.latent_shift and meta["latent_shift"]["images"] == 2
    small = tmp_path / "small"
    small.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8), "RGB").save(small / "a.png")
    assert cli(["fit-shift", str(trained_tiny), "--data", str(small), "--out",
                str(tmp_path / "x.safetensors")]) == 2
    assert "pixels a side" in capsys.readouterr().err
