"""Start-up time of a codec in a fresh process: an onnxruntime engine vs the checkpoint it was
exported from (the baseline, measured in the same run), medians of repeats.

    python benchmarks/engine_startup.py [--engine DIR] [--repeat 5]

Each sample is one new Python process that imports stcm and builds ``stcm.Codec`` (the
engine's sessions, or the checkpoint's model and torch backend), timed inside the process
from before the first stcm import. Without ``--engine`` the built-in model is exported to a
temporary folder first. The engine process also reports whether torch was imported.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

PROBE = """
import json, sys, time
start = time.perf_counter()
from stcm.runtime.codec import Codec
codec = Codec(**json.loads(sys.argv[1]))
print(json.dumps({"seconds": time.perf_counter() - start, "torch": "torch" in sys.modules}))
"""


def startup(kwargs: dict, repeat: int) -> tuple[float, list[float], bool]:
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(kwargs)], check=True,
                             capture_output=True, text=True).stdout
        runs.append(json.loads(out.splitlines()[-1]))
    times = [r["seconds"] for r in runs]
    return statistics.median(times), times, runs[-1]["torch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", help="engine directory (default: export the built-in "
                        "model to a temporary one)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = args.engine
        if engine is None:
            from stcm.export.onnx import export_engine
            from stcm.runtime.codec import default_model_path

            engine = str(export_engine(default_model_path(), f"{tmp}/engine").parent)
        model_s, model_runs, _ = startup({}, args.repeat)
        engine_s, engine_runs, engine_torch = startup({"engine": engine}, args.repeat)
    print(f"Codec() start-up, fresh process, medians of {args.repeat}:")
    print(f"  checkpoint (built-in model, torch backend)  {model_s:6.2f} s  "
          f"{[round(t, 2) for t in model_runs]}")
    print(f"  engine (onnxruntime)                        {engine_s:6.2f} s  "
          f"{[round(t, 2) for t in engine_runs]}  torch imported: {engine_torch}")
    print(f"  engine / checkpoint                         {engine_s / model_s:6.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checkpoint_s": model_s, "engine_s": engine_s, "checkpoint_runs": model_runs,
                       "engine_runs": engine_runs, "engine_imports_torch": engine_torch}, f,
                      indent=1)


if __name__ == "__main__":
    main()
