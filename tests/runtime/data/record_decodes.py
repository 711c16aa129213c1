"""Records what the legacy fixtures (format22/, format23/) decode to: the latents' SHA-256
(exact integer entropy path: the same on every machine) in ``legacy_decodes.json``, and the
pixels (float synthesis: a CPU's kernels may move a sample by a level) in
``legacy_decodes.npz``. Run once, with the stcm of each folder's fixtures (ec4e2e2 for
format22, 43724b7 for format23, 1451f9b for format24) importable, e.g. ``PYTHONPATH=<that tree as a package>``;
``tests/runtime/test_legacy_streams.py`` checks today's stcm against both files.

    python tests/runtime/data/record_decodes.py format22
"""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

from stcm.runtime.codec import Codec

HERE = Path(__file__).resolve().parent


def decode(codec, folder: str, name: str, reference: str | None):
    """(pixels, latents) of a fixture, with its reference decoded first."""
    from stcm.runtime.codec import _Reference

    data = (HERE / folder / name).read_bytes()
    ref, ref_data = None, None
    if reference:
        ref_data = (HERE / folder / reference).read_bytes()
        ref = _Reference.decoded(*codec._decompress(ref_data, None))
    image, latents = codec._decompress(data, ref, ref_data)
    return image.pixels, latents


def latent_hash(latents) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(t).tobytes() for t in latents)
                          ).hexdigest()


def main(folder: str) -> None:
    torch.set_num_threads(1)
    codec = Codec(HERE / "format22" / "model.safetensors")
    hashes_path, pixels_path = HERE / "legacy_decodes.json", HERE / "legacy_decodes.npz"
    hashes = json.loads(hashes_path.read_text()) if hashes_path.exists() else {}
    pixels = dict(np.load(pixels_path)) if pixels_path.exists() else {}
    for name, e in json.loads((HERE / folder / "expected.json").read_text()).items():
        back, latents = decode(codec, folder, name, e["reference"])
        hashes[f"{folder}/{name}"] = latent_hash(latents)
        pixels[f"{folder}/{name}"] = back
    hashes_path.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    np.savez_compressed(pixels_path, **pixels)


if __name__ == "__main__":
    main(sys.argv[1])
