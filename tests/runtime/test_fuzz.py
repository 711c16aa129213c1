"""Seeded fuzzing of the decoder (``benchmarks/fuzz.py``): mutated real streams with every
CRC32 recomputed fail with a clean StcmError or decode exactly what was coded.

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


def test_stream_damage_decodes_silently_only_where_a_drained_coder_ends_exactly(layer_corpus):
    # The residual of a check without a checksum of the symbols (runtime/ans.py): garbage that
    # runs out of words within a stream's last symbols ends in the initial state. Before the
    # run-dry check these kinds decoded silently 10-60 % of the time; now at most 10 %.
    layer, corpus = layer_corpus
    kinds = ("drop_last_word", "flip_y", "flip_z", "append_word", "truncate_stream",
             "foreign_stream", "swap_streams")
    counts = _outcomes(layer, corpus, kinds, 100, seed=2)
    for kind, c in counts.items():
        assert c["other"] == 0 and c["header"] == 0, (kind, c)
        assert c["changed"] <= 10, (kind, c)


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
    assert counts["clean"] >= 70


def test_the_runner_counts_outcomes_in_a_capped_worker():
    result = fuzz.run(60, seed=7, workers=1, time_limit=60.0, memory_mb=4096)
    assert sum(result["total"].values()) == 60
    assert result["total"]["crash"] == result["total"]["hang"] == 0
