"""Seeded fuzzing of the decoder (``benchmarks/fuzz.py``): mutated real streams with every
CRC32 recomputed fail with a clean StcmError or decode exactly what was coded; format 2.4's
symbol checksums leave no silent decode of changed symbols.

The benchmark runs a million inputs against the entropy layer with a memory cap and a time
limit per input; here a few thousand run in-process in a few seconds.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import fuzz  # noqa: E402  (benchmarks/ is not a package)

from conftest import make_smooth_image  # noqa: E402
from stcm.config import get_config  # noqa: E402
from stcm.models.codec import STCM  # noqa: E402
from stcm.runtime.codec import Codec  # noqa: E402
from stcm.runtime.container import read_container  # noqa: E402


@pytest.fixture(scope="module")
def layer_corpus():
    layer = fuzz.EntropyLayer(3)
    return layer, fuzz._corpus(layer, 3, 12)


def _outcomes(layer, corpus, kinds, per_kind, seed):
    counts = {k: dict.fromkeys(fuzz.OUTCOMES, 0) for k in kinds}
    for kind in kinds:
        for i in range(per_kind):
            rng = np.random.default_rng([seed, i])
            data, original = corpus[i % len(corpus)]
            bad = fuzz.mutate(kind, data, rng, corpus[(i + 1) % len(corpus)][0])
            counts[kind][fuzz.entropy_outcome(layer, bad, original)] += 1
    return counts


def test_the_entropy_layer_refuses_emptied_appended_and_rewritten_inputs(layer_corpus):
    layer, corpus = layer_corpus
    kinds = ("empty_all", "empty_one", "insert_bytes", "record_byte", "record_insert",
             "record_delete", "truncate_file", "flip_any")
    counts = _outcomes(layer, corpus, kinds, 100, seed=1)
    for kind, c in counts.items():
        assert c["clean"] + c["same"] + c["header"] == 100, (kind, c)
    assert counts["empty_all"]["clean"] == counts["empty_one"]["clean"] == 100


STREAM_DAMAGE = ("drop_last_word", "flip_y", "flip_z", "append_word", "truncate_stream",
                 "foreign_stream", "swap_streams")


def test_stream_damage_never_decodes_silently_with_symbol_checksums(layer_corpus):
    layer, corpus = layer_corpus
    counts = _outcomes(layer, corpus, STREAM_DAMAGE, 100, seed=2)
    for kind, c in counts.items():
        assert c["other"] == 0 and c["header"] == 0 and c["changed"] == 0, (kind, c)


def test_the_symbol_checksums_refuse_what_decoded_silently_without_them(layer_corpus):
    # Issue 17's residual: without a checksum of the symbols (format 2.3), garbage that runs
    # out of words within a stream's last symbols ends in the coder's initial state and
    # decodes silently to other symbols. The same corpus and the very same mutations, with
    # the checksums (the containers differ only by the table), are refused.
    layer, corpus = layer_corpus
    plain_layer = fuzz.EntropyLayer(3, checksums=False)
    plain = fuzz._corpus(plain_layer, 3, 12)
    assert all(read_container(d).checksums is None for d, _ in plain)
    silent = 0
    for kind in STREAM_DAMAGE:
        for i in range(100):
            data, original = plain[i % len(plain)]
            bad = fuzz.mutate(kind, data, np.random.default_rng([2, i]),
                              plain[(i + 1) % len(plain)][0])
            if fuzz.entropy_outcome(plain_layer, bad, original) != "changed":
                continue
            silent += 1
            data, original = corpus[i % len(corpus)]
            twin = plain[i % len(plain)][1].symbols  # the same symbols, coded the same
            assert len(twin) == len(original.symbols) and all(
                np.array_equal(a, b) for a, b in zip(original.symbols, twin))
            bad = fuzz.mutate(kind, data, np.random.default_rng([2, i]),
                              corpus[(i + 1) % len(corpus)][0])
            assert fuzz.entropy_outcome(layer, bad, original) == "clean", (kind, i)
    assert silent >= 5


def test_a_real_codec_refuses_every_damaged_stream(one_torch_thread):
    torch.manual_seed(0)
    codec = Codec(STCM(get_config("tiny")).eval(), tile_size=2)
    rng = np.random.default_rng(4)
    files = [codec.compress(np.rint(make_smooth_image(rng, 3, 64, 80) * 255).astype(np.uint8),
                            q) for q in (0.2, 0.9)]
    originals = [(d, codec.decompress(d), read_container(d).header) for d in files]
    counts = dict.fromkeys(fuzz.OUTCOMES, 0)
    for i in range(8 * len(fuzz.STREAM_KINDS)):
        data, pixels, header = originals[i % 2]
        bad = fuzz.mutate(fuzz.STREAM_KINDS[i % len(fuzz.STREAM_KINDS)], data,
                          np.random.default_rng([5, i]), originals[1 - i % 2][0])
        counts[fuzz.codec_outcome(codec, bad, pixels, header)] += 1
    assert counts["clean"] + counts["same"] == 8 * len(fuzz.STREAM_KINDS), counts
    # "same": e.g. two streams swapped that hold the same symbols, such as two empty ones of
    # tiles outside the image's footprint (64 x 80 pixels on a 64 x 128 canvas)
    assert counts["clean"] >= 65


def test_the_runner_counts_outcomes_in_a_capped_worker():
    result = fuzz.run(60, seed=7, workers=1, time_limit=60.0, memory_mb=4096)
    assert sum(result["total"].values()) == 60
    assert result["total"]["crash"] == result["total"]["hang"] == 0
