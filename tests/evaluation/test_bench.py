"""stcm bench: spans, the per-stage breakdown, the Chrome trace and the counted MACs."""
import json

import numpy as np
import pytest
import torch

from stcm.models.codec import STCM
from stcm.config import get_config
from stcm.evaluation.bench import (CATEGORIES, breakdown, count_macs, format_report, merge_traces,
                                run_bench)
from stcm.runtime.codec import Codec
from stcm.runtime.profile import Recorder


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return Codec(STCM(get_config("tiny")).eval(), tile_size=4)


def _image(size=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (3, size, size), dtype=np.uint8)


def test_spans_cover_every_stage_and_step_inside_the_run(codec):
    recorder = Recorder()
    codec.recorder = recorder
    try:
        data = codec.compress(_image(), 0.5)
        encode = list(recorder.spans)
        recorder.clear()
        codec.decompress(data)
        decode = list(recorder.spans)
    finally:
        codec.recorder = None
    for spans, root in ((encode, "encode"), (decode, "decode")):
        (top,) = [s for s in spans if s.cat == root]
        for s in spans:  # everything nests inside the run's root span
            assert top.start_ns <= s.start_ns and s.start_ns + s.dur_ns <= top.start_ns + top.dur_ns
        steps = [s for s in spans if s.cat == "step"]
        assert len(steps) == codec.sequential_steps(*_image().shape) > 0
        stages = {s.name for s in spans if s.cat == "stage"}
        assert {"hyper_synthesis", "side_0", "step_3"} <= stages
    assert "analysis" in {s.name for s in encode} and "synthesis" in {s.name for s in decode}
    parts = breakdown(decode)
    assert set(CATEGORIES) <= set(parts)
    assert sum(parts[c] for c in CATEGORIES) == pytest.approx(parts["total"], rel=1e-6)
    assert parts["steps: network"] > 0 and parts["steps: ANS"] > 0 and parts["synthesis"] > 0


def test_no_recorder_records_nothing(codec):
    recorder = Recorder()
    codec.recorder = recorder
    codec.recorder = None
    codec.decompress(codec.compress(_image(), 0.5))
    assert recorder.spans == [] and codec.backend.recorder is None


def _conv_macs(cin, cout, k, h, w):
    return cin * cout * k * k * h * w


def _bottleneck(n, h, w):
    return _conv_macs(n, n // 2, 1, h, w) + _conv_macs(n // 2, n // 2, 3, h, w) + \
        _conv_macs(n // 2, n, 1, h, w)


def test_counted_macs_of_the_analysis_transform_match_a_hand_count():
    cfg = get_config("tiny")  # N=24, M=32, one bottleneck per stage, no attention
    n, m = cfg.N, cfg.M
    expected = (_conv_macs(3, n, 5, 32, 32) + _bottleneck(n, 32, 32)
                + _conv_macs(n, n, 5, 16, 16) + _bottleneck(n, 16, 16)
                + _conv_macs(n, n, 5, 8, 8) + _bottleneck(n, 8, 8)
                + _conv_macs(n, m, 5, 4, 4))
    counts = count_macs(cfg, 64, 64)
    assert counts["analysis"] == expected
    # synthesis mirrors it with transposed convolutions: every input element meets
    # Cout x 5 x 5 weights
    assert counts["synthesis"] > 0 and counts["steps: network"] > 0


def test_counted_macs_of_the_hl_analysis_match_a_hand_count():
    cfg = get_config("tiny", backbone="hl", high_width=16)
    n, nh, m = cfg.N, cfg.high_features, cfg.M

    def branch(cin, width):  # three strided stages from the 32x32 bands
        return (_conv_macs(cin, width, 5, 16, 16) + _bottleneck(width, 16, 16)
                + _conv_macs(width, width, 5, 8, 8) + _bottleneck(width, 8, 8)
                + _conv_macs(width, width, 5, 4, 4) + _bottleneck(width, 4, 4))

    # The fixed Haar split (12 MACs per pixel) is a functional convolution, not counted.
    expected = branch(3, n) + branch(9, nh) + _conv_macs(n + nh, m, 3, 4, 4)
    assert count_macs(cfg, 64, 64)["analysis"] == expected


def test_cli_bench_runs_an_hl_engine(tmp_path, capsys):
    from stcm.cli import main
    from stcm.export.onnx import export_engine

    torch.manual_seed(0)
    export_engine(STCM(get_config("tiny", backbone="hl")).eval(), tmp_path / "hl",
                  progress=False)
    assert main(["bench", "--engine", str(tmp_path / "hl"), "--size", "64", "--repeat", "1",
                 "--tile-size", "4", "--json", str(tmp_path / "b.json")]) == 0
    assert "synthesis" in capsys.readouterr().out
    assert json.loads((tmp_path / "b.json").read_text())["results"][0]["size"] == 64


def test_report_and_trace(codec, tmp_path):
    trace = {}
    report = run_bench(codec, [64, 128], repeat=2, trace=trace)
    assert [r.size for r in report.results] == [64, 128]
    for r in report.results:
        assert len(r.encode_s) == len(r.decode_s) == 2 and r.bpp > 0
        assert set(r.percentiles("decode")) == {"p50", "p90", "p99"}
    text = format_report(report)
    assert "steps: network" in text and "scaling" in text and "GFLOP/s" in text
    merged = merge_traces(trace)
    (tmp_path / "trace.json").write_text(json.dumps(merged))
    events = json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    complete = [e for e in events if e["ph"] == "X"]
    assert {e["cat"] for e in complete} >= {"encode", "decode", "stage", "step", "ans"}
    assert all(e["dur"] >= 0 and "ts" in e for e in complete)
    assert {e["pid"] for e in complete} == {1, 2}  # encode and decode as two processes
    assert json.loads(json.dumps(report.to_dict()))["results"][0]["size"] == 64


def test_cli_bench_prints_the_table_and_writes_json_and_trace(tmp_path, capsys):
    from stcm.cli import main

    out, trace = tmp_path / "bench.json", tmp_path / "trace.json"
    assert main(["bench", "--model", "tiny", "--size", "64,128", "--repeat", "1",
                 "--tile-size", "4", "--tiles", "3", "--json", str(out),
                 "--trace", str(trace)]) == 0
    text = capsys.readouterr().out
    assert "steps: ANS" in text and "3 per step call" in text
    assert [r["size"] for r in json.loads(out.read_text())["results"]] == [64, 128]
    assert json.loads(trace.read_text())["traceEvents"]
    assert main(["bench", "--model", "tiny", "--size", "12"]) == 2
    assert "--size" in capsys.readouterr().err
