"""The opt-in heap retention (runtime/heap.py): off unless asked, in force when asked (on
glibc), and the same streams and pixels either way."""
import json
import os
import platform
import subprocess
import sys

import pytest

SCRIPT = """
import hashlib, json, sys
import numpy as np
from stcm.runtime.codec import Codec
from stcm.runtime.heap import retain_freed_memory
codec = Codec(tile_size=8)  # the built-in model
image = np.random.default_rng(0).integers(0, 256, (3, 96, 80), dtype=np.uint8)
data = codec.compress(image, 0.5)
pixels = codec.decompress(data)
print(json.dumps({"retained": retain_freed_memory(),
                  "stream": hashlib.sha256(data).hexdigest(),
                  "pixels": hashlib.sha256(pixels.tobytes()).hexdigest()}))
"""


def _run(value):
    env = {k: v for k, v in os.environ.items() if k != "STCM_RETAIN_HEAP"}
    if value is not None:
        env["STCM_RETAIN_HEAP"] = value
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_heap_retention_is_opt_in_and_changes_no_byte():
    default, retained = _run(None), _run("1")
    assert default["retained"] is False and retained["retained"] is True
    assert retained["stream"] == default["stream"]
    assert retained["pixels"] == default["pixels"]
