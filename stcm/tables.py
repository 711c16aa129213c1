"""Coding tables: the data a codec needs beside its stages (no network in here).

Pinned gains per quality level, the factorized prior's probability tables and medians, the
latent shift tables of models that have them (``stcm.shift_tables``), the model config and
the model id. They come from a frozen model (``from_model``) or from an
engine directory (``load``), and every backend computes the same gains from them with the
same float64 code (``stcm.quality.coding_gains``), so encoder and decoder agree whichever
backend or machine each uses.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from stcm.atomic import atomic_path
from stcm.errors import CheckpointError
from stcm.config import ModelConfig
from stcm.quality import coding_gains
from stcm.shift_tables import check_shift_tables

TABLES_NAME = "tables.safetensors"


@dataclass(frozen=True)
class CodingTables:
    """Everything but the networks: config, id, gains and the z prior's tables."""

    config: ModelConfig
    model_id: bytes
    gain_enc: np.ndarray  # (L, M) float32 gains of the trained levels
    gain_dec: np.ndarray  # (L, M) float32
    z_pmfs: np.ndarray  # (N, width) float64
    z_lengths: np.ndarray  # (N,) int32
    z_offsets: np.ndarray  # (N,) int32
    z_medians: np.ndarray  # (N,) float32
    # (SHIFT_PHASES, M, M, SHIFT_TAPS) int16 each, iff config.latent_shift
    shift_rows: np.ndarray | None = None
    shift_cols: np.ndarray | None = None

    def __post_init__(self):
        shifts = self.shift_rows is not None and self.shift_cols is not None
        if (shifts != self.config.latent_shift
                or (self.shift_rows is None) != (self.shift_cols is None)):
            raise CheckpointError("the coding tables' latent shift tables do not match the "
                                  f"config (latent_shift={self.config.latent_shift})")
        if shifts:
            try:
                check_shift_tables(self.shift_rows, self.shift_cols, self.config.M)
            except ValueError as exc:
                raise CheckpointError(str(exc)) from None

    @property
    def shift_tables(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(rows, cols) latent shift tables, or None: the model has none."""
        return None if self.shift_rows is None else (self.shift_rows, self.shift_cols)

    @classmethod
    def from_model(cls, model, model_id: bytes) -> "CodingTables":
        """The tables of a frozen ``stcm.models.codec.STCM`` (read duck-typed: no torch here)."""
        coding = model.coding
        tables = coding.z
        shifts = model.latent_shift.tables() if model.cfg.latent_shift else (None, None)
        return cls(model.cfg, model_id, coding.gain_enc, coding.gain_dec,
                   tables.pmfs, tables.lengths, tables.offsets, tables.medians, *shifts)

    def gains(self, quality: float) -> tuple[np.ndarray, np.ndarray]:
        """(encoder gain, decoder gain), each float32 (1, M, 1, 1), for one quality in [0, 1]."""
        return tuple(g.reshape(1, -1, 1, 1)
                     for g in coding_gains(self.gain_enc, self.gain_dec, quality))

    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / TABLES_NAME
        arrays = {"gain_enc": self.gain_enc, "gain_dec": self.gain_dec,
                  "z_pmfs": self.z_pmfs, "z_lengths": self.z_lengths,
                  "z_offsets": self.z_offsets, "z_medians": self.z_medians}
        if self.shift_rows is not None:
            arrays.update(shift_rows=self.shift_rows, shift_cols=self.shift_cols)
        with atomic_path(path) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp),
                      metadata={"config": self.config.to_json(), "model_id": self.model_id.hex()})
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "CodingTables":
        path = Path(folder) / TABLES_NAME
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                arrays = {k: f.get_tensor(k) for k in f.keys()}
            config = ModelConfig.from_json(meta["config"])
            model_id = bytes.fromhex(meta["model_id"])
            return cls(config, model_id, arrays["gain_enc"], arrays["gain_dec"],
                       arrays["z_pmfs"], arrays["z_lengths"], arrays["z_offsets"],
                       arrays["z_medians"], arrays.get("shift_rows"), arrays.get("shift_cols"))
        except (SafetensorError, OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot read coding tables {path}: {exc}") from exc
