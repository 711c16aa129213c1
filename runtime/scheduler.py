"""The scheduler: codes one latent group by group, step by step, over all tiles.

Encoding and decoding run the very same code; only the visit of each step differs:

    for group k:                                   # ELIC's channel groups, in order
        side = side_proj(hyper, channel ctx(y_hat[< k]), temporal ctx(reference))   # whole latent
        for step t of the group's spatial order:   # H+W-1 anti-diagonals for diag
            for each chunk of tiles:
                mean, scale = program.params(t)    # only the new positions
                encode: s = round(y - mean) -> ANS;  decode: s <- ANS
                y_hat = s + mean; program.update(t, y_hat)

Determinism: float results of the networks that decide the coded distributions change with
the number of tiles in one call and with the thread count (measured: 1x1 convolutions at
batch 8 vs 1 on 2 threads, and the small model's hyper synthesis on 1 vs 2 threads, differ in
the last bits). So each tile is computed alone (``tile_batch=1``), and this whole entropy
path runs on one thread (``Backend.entropy_threads``): a tile's parameters then depend on
nothing but the tile. Exact models (``ModelConfig.exact``, docs/determinism.md) compute integers that
do not depend on any of this: they run with any ``tile_batch`` and thread count.

What a run does is decided before it starts, as data: ``Scheduler.plan(shape)`` is a ``Plan``
(the tile grid, and per channel group its channels, its number of sequential steps and the
chunks of tiles each step call holds); ``encode`` and ``decode`` execute one. Progress bars
and step counts read the plan rather than state left on the scheduler.

Arrays live on the backend's device (NumPy on the CPU, CuPy on a GPU); the per-step glue
(scale indexes, quantisation, the wavefront's layout) is ``stcm.kernels.select(device)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from stcm import kernels
from stcm.config import ModelConfig
from stcm.contexts import context_variant
from stcm.errors import CorruptError
from stcm.runtime.ans import (FactorizedCoder, GaussianDecoder, GaussianEncoder, ScaleQuantizer,
                              min_stream_bytes, symbol_checksum)
from stcm.runtime.backends.base import Backend
from stcm.runtime.container import KIND_Z, Container
from stcm.runtime.header import HYPER_DOWNSAMPLE
from stcm.runtime.profile import Recorder, span
from stcm.runtime.steps import GroupProgram, RecomputeProgram
from stcm.runtime.tiling import TileGrid, intersect
from stcm.runtime.transfer import HostStaging, to_host
from stcm.runtime.wavefront import WavefrontProgram

# What the side input of a position reads around it, in latent positions (window_plan):
CHANNEL_CONTEXT_RADIUS = 6  # models.entropy_parameters.ChannelContext: three 5x5 convolutions
TEMPORAL_CONTEXT_RADIUS = 2  # TemporalContext: two 3x3 convolutions
# z positions around a latent crop's z cells that h_s needs (two 5x5 stride-2 transposed
# convolutions and a 3x3: 1 before the crop, 2 after it; tests/runtime/test_window.py checks
# that 2 give the whole computation's values and 1 does not).
HYPER_MARGIN = 2

# visit(k, t, tiles, program, mean, scale, coded) -> y_hat of the step's positions, (b, C, n);
# coded: (b, n) bool, the positions that have a symbol in the stream (the others, over the
# replicated padding of format 3.0, are y_hat = mean: symbol 0, never coded)
Visit = Callable[[int, int, range, GroupProgram, object, object, object], object]


@dataclass(frozen=True)
class GroupPlan:
    """One channel group's part of a plan: its index and channels, its sequential steps, and
    the tiles of each step call (every step visits every chunk, in order)."""

    group: int
    channels: slice
    steps: int
    chunks: tuple[range, ...]  # positions in ``tiles``
    tiles: Sequence[int] = ()  # the grid's tiles this group codes (a range: all of them)


@dataclass(frozen=True)
class Plan:
    """A coding run of one latent: the tiling and the groups in coding order."""

    grid: TileGrid
    groups: tuple[GroupPlan, ...]
    # (row0, col0, rows, cols): the crop of the latent the run holds (hyper prior, reference
    # and the decoded latent); None: the whole latent.
    box: tuple[int, int, int, int] | None = None

    @property
    def crop(self) -> tuple[int, int, int, int]:
        """``box``, or the whole latent's."""
        return self.box or (0, 0, self.grid.height, self.grid.width)

    @property
    def tiles(self) -> tuple[int, ...]:
        """Every tile some group codes (whose stream is read), in order."""
        return tuple(sorted(set().union(*(g.tiles for g in self.groups))))

    @property
    def steps(self) -> int:
        """Sequential steps of the whole run."""
        return sum(g.steps for g in self.groups)

    @property
    def calls(self) -> int:
        """Step-stage calls of the whole run."""
        return sum(g.steps * len(g.chunks) for g in self.groups)


# Latent positions per step call when ``tile_batch`` is None (exact models by default): 8
# tiles of 64^2, or 512 of 8^2; fewer, larger calls amortise each call's fixed cost, but a
# chunk's step caches are alive at once. Measured (stage 9, 1 thread): 16 tiles of 64 a call
# decoded a 4096^2 scene in 32.9 s, 8 in 32.2 s (medians of 2, interleaved, idle), and the
# encode of a 10240^2 x 4 scene peaked at 2.32 GB with 16, 1.99 GB with 8.
STEP_POSITIONS = 8 * 64 * 64
# Latent positions (before the context margin) per side-input call of an exact model: its
# stages hold ~10 KB of activations per position, so a whole 10240^2 scene's latent would
# need ~4 GB at once; a row of at most 4 tiles of 64^2 at a time needs ~0.2 GB.
SIDE_POSITIONS = 4 * 64 * 64


@dataclass(frozen=True)
class CodedLatent:
    """What ``Scheduler.encode`` returns: the quantized latent the decoder will reconstruct,
    one stream per tile and, per tile, the ``symbol_checksum`` of the symbols it codes (what
    format 2.4 stores for the decoder to verify)."""

    y_hat: object  # (1, M, h, w), on the backend's device
    streams: list[bytes]
    checksums: list[int]


class Scheduler:
    """Runs the decode schedule over a tiled latent, with stages run by ``backend``."""

    def __init__(self, backend: Backend, cfg: ModelConfig, table: np.ndarray,
                 tile_size: int = 64, tile_batch: int | None = 1, naive: bool = False):
        self.backend = backend
        self.cfg = cfg
        self.context = context_variant(cfg.context)
        self.table = table
        self.quantizer = ScaleQuantizer(table)
        self.tile_size = tile_size
        self.tile_batch = None if tile_batch is None else max(1, tile_batch)
        self.naive = naive
        self.recorder: Recorder | None = None  # timing spans (runtime/profile.py)
        self.staging = HostStaging()
        self.ops = kernels.select(backend.device)
        self.thresholds = self.ops.xp.asarray(self.quantizer.thresholds)
        starts = [sum(cfg.groups[:k]) for k in range(len(cfg.groups))]
        self.slices = [slice(s, s + c) for s, c in zip(starts, cfg.groups)]
        # (group, box shape up to 2r + 1): temporal features of a zero reference
        self._zero_features: dict = {}

    def batch(self, tile_size: int | None = None) -> int:
        """Tiles per step call for tiles of ``tile_size`` (None: this scheduler's)."""
        return self.tile_batch or max(1, STEP_POSITIONS // (tile_size or self.tile_size) ** 2)

    def plan(self, shape: tuple[int, int], tile_size: int | None = None) -> Plan:
        """The run that codes a latent of ``shape`` (h, w) in tiles of ``tile_size`` positions
        (None: this scheduler's), ``tile_batch`` tiles per step call (None: as many as hold
        ``STEP_POSITIONS`` positions)."""
        grid = TileGrid(shape[0], shape[1], tile_size or self.tile_size)
        return self._plan(grid, [range(grid.count)] * len(self.slices))

    def window_plan(self, shape: tuple[int, int], needed: tuple[int, int, int, int],
                    tile_size: int | None = None) -> Plan:
        """The decode of a latent of ``shape`` that gets the positions ``needed`` (row0, col0,
        rows, cols) exactly as the whole decode would, touching as few tiles as it can.

        What a decoded value depends on (radii in latent positions, from models/):

        - A tile is one ANS stream and its spatial context stays inside it, so a group's
          position needs the whole tile's decode of that group, given its side input.
        - The side input of group k at a position: the hyper prior Psi there (a 1x1 side
          projection), the channel context ``CHANNEL_CONTEXT_RADIUS`` = 6 around it over
          groups < k (three 5x5 convolutions) and the temporal context
          ``TEMPORAL_CONTEXT_RADIUS`` = 2 around it over the reference (two 3x3).
        - Psi = h_s(z_hat): ``HYPER_MARGIN`` z positions around it cover h_s's receptive
          field (the codec crops z so).

        So, from the last group back: T_last = tiles touching ``needed``; T_k = tiles touching
        the cover of T_(k+1) dilated by 6 (that cover holds ``needed`` too, since T_(k+1)
        grows from it). Group k decodes T_k, a superset of T_(k+1). The run's crop is the
        cover of T_0 dilated by the temporal radius, aligned to z's grid (4 positions) so
        that Psi is computed on whole z cells; values nearer its edge than a radius are
        computed from the crop's artificial zero border but never used. Exact models make
        every kept value bit-identical to the whole decode (integer sums in any order)."""
        grid = TileGrid(shape[0], shape[1], tile_size or self.tile_size)
        tiles = [grid.touching(needed)]
        for _ in self.slices[1:]:
            tiles.insert(0, grid.touching(dilate_box(grid.cover(tiles[0]), CHANNEL_CONTEXT_RADIUS,
                                                  shape)))
        # Also without a reference: its zeros go through biases, so the temporal context's
        # second layer sees a non-zero constant that the crop's zero border would cut.
        margin = TEMPORAL_CONTEXT_RADIUS if self.cfg.temporal else 0
        r0, c0, h, w = dilate_box(grid.cover(tiles[0]), margin, shape)
        a = HYPER_DOWNSAMPLE  # latent positions per z position
        r1, c1 = min(-(-(r0 + h) // a) * a, shape[0]), min(-(-(c0 + w) // a) * a, shape[1])
        r0, c0 = r0 // a * a, c0 // a * a
        return self._plan(grid, tiles, (r0, c0, r1 - r0, c1 - c0))

    def _plan(self, grid: TileGrid, tiles: list[Sequence[int]], box=None) -> Plan:
        steps = self.context.num_steps(*grid.frame)
        batch = self.batch(grid.size)
        groups = []
        for k, (sl, group_tiles) in enumerate(zip(self.slices, tiles)):
            chunks = tuple(range(i, min(i + batch, len(group_tiles)))
                           for i in range(0, len(group_tiles), batch))
            groups.append(GroupPlan(k, sl, steps, chunks, group_tiles))
        return Plan(grid, tuple(groups), box)

    def _program(self, k: int, side, valid, prediction) -> GroupProgram:
        channels = self.cfg.groups[k]
        if self.context.wavefront and not self.naive:
            extra = self.backend.signatures[f"step_{k}"].extra
            return WavefrontProgram(self.backend, k, channels, side, valid, extra["radius"],
                                    [tuple(c) for c in extra["caches"]], prediction)
        return RecomputeProgram(self.backend, k, self.context, channels, side, valid,
                                prediction)

    def _side(self, k: int, hyper, y_hat, reference, gain) -> tuple:
        """(side input, temporal prediction or None) of group k on one box."""
        inputs = [hyper]
        if k > 0:
            inputs.append(y_hat[:, : self.slices[k].start])
        prediction = None
        if self.cfg.temporal:
            if reference is None:
                inputs.append(self._zero_temporal(k, hyper))
            else:
                out = self.backend.run(f"temporal_{k}", reference,
                                       *([gain] if self.cfg.temporal_prediction else []))
                inputs.append(out[0])
                if self.cfg.temporal_prediction:
                    prediction = out[1]
        return self.backend.run(f"side_{k}", *inputs)[0], prediction

    def _zero_temporal(self, k: int, hyper):
        """Group k's temporal features of a zero reference on ``hyper``'s box (images and
        tiles coded alone). Exact models: two 3x3 convolutions give the same value everywhere
        but within ``TEMPORAL_CONTEXT_RADIUS`` r of an edge, so it is computed once on a box
        of at most 2r + 1 per side and its rows and columns repeated: the very integers of
        the whole box's computation, without its cost. Float models compute the whole box:
        their sums are not exact, so another shape could change a bit."""
        ops, m = self.ops, self.cfg.M
        gain = ([np.ones_like(hyper, shape=(1, m, 1, 1))] if self.cfg.temporal_prediction
                else [])
        shape = tuple(hyper.shape[-2:])
        if not self.backend.exact:
            zeros = np.zeros_like(hyper, shape=(1, m, *shape))
            return self.backend.run(f"temporal_{k}", zeros, *gain)[0]
        r = TEMPORAL_CONTEXT_RADIUS
        small = tuple(min(n, 2 * r + 1) for n in shape)
        key = (k, small)
        if key not in self._zero_features:
            zeros = np.zeros_like(hyper, shape=(1, m, *small))
            self._zero_features[key] = self.backend.run(f"temporal_{k}", zeros, *gain)[0]
        features = self._zero_features[key]
        rows, cols = (ops.xp.asarray(edge_index(n, r)) for n in shape)
        return features[:, :, rows][:, :, :, cols]

    def side_margin(self, k: int) -> int:
        """Latent positions around a position that group k's side input reads (beyond the
        hyper prior under it, a 1x1 projection): the channel context over groups < k and
        the temporal context over the reference."""
        return max(CHANNEL_CONTEXT_RADIUS if k > 0 else 0,
                   TEMPORAL_CONTEXT_RADIUS if self.cfg.temporal else 0)

    def side_blocks(self, grid: TileGrid, tiles: Sequence[int]) -> list[Sequence[int]]:
        """``tiles`` (raster order) cut into rectangles of at most ``SIDE_POSITIONS`` latent
        positions: the tiles whose side input one call computes, on their box grown by the
        context margin. Runs of one tile row, stacked while the next row's run spans the
        same columns: small tiles (a window decode's) then share one call and one margin,
        where a call per row recomputed the margin rows for every 8 rows of tiles of 8.
        The order of ``tiles`` is kept."""
        th, tw = grid.frame
        per_block = max(1, SIDE_POSITIONS // (th * tw))
        cols = grid.shape[1]
        runs: list[list[int]] = []
        for t in tiles:
            last = runs[-1] if runs else None
            if (last and len(last) < per_block and last[-1] // cols == t // cols
                    and last[-1] + 1 == t):
                last.append(t)
            else:
                runs.append([t])
        blocks: list[list[int]] = []
        for run in runs:
            last = blocks[-1] if blocks else None
            if (last and len(last) + len(run) <= per_block and len(run) == _row_width(last, cols)
                    and run[0] == last[-len(run)] + cols):
                last.extend(run)
            else:
                blocks.append(list(run))
        return blocks

    def _side_tiles(self, k: int, plan: Plan, tiles: Sequence[int], hyper, y_hat, reference,
                    gain, intra: list[bool] | None, whole: dict) -> tuple:
        """Group k's side input of ``tiles`` (a chunk), split into tiles: (b, A, th, tw), and
        its temporal prediction so split, or None.

        Exact models compute it a few tiles at a time (``side_blocks``) on the box of those
        tiles grown by ``side_margin`` (inside the plan's crop, whose edge pads with zeros as
        the whole computation does): integer sums make it bit-identical to the whole crop's,
        and memory stays bounded by the block, not the latent. Float models compute the whole
        crop once per group (``whole`` keeps it), as streams coded so expect."""
        grid, xp = plan.grid, self.ops.xp
        r0, c0, _, _ = plan.crop

        def sides(box, block):
            a, b, h, w = box
            cut = (slice(None), slice(None), slice(a - r0, a - r0 + h), slice(b - c0, b - c0 + w))
            ref = reference[cut] if reference is not None else None
            side, pred = (None if v is None else grid.split(v, block, (a, b))
                          for v in self._side(k, hyper[cut], y_hat[cut], ref, gain))
            if reference is not None and intra is not None and any(intra[t] for t in block):
                # intra tiles read the side computed with a zero reference, and no prediction
                flags = xp.asarray([intra[t] for t in block]).reshape(-1, 1, 1, 1)
                alone = self._side(k, hyper[cut], y_hat[cut], None, gain)[0]
                side = xp.where(flags, grid.split(alone, block, (a, b)), side)
                if pred is not None:
                    pred = xp.where(flags, xp.float32(0), pred)
            return side, pred

        if not self.backend.exact:
            if "side" not in whole:
                whole["side"] = sides(plan.crop, plan.groups[k].tiles)
            index = {t: i for i, t in enumerate(plan.groups[k].tiles)}
            pick = [index[t] for t in tiles]
            return tuple(None if v is None else v[pick] for v in whole["side"])
        margin = self.side_margin(k)
        parts = []
        for block in self.side_blocks(grid, tiles):
            box = dilate_box(grid.cover(block), margin, (grid.height, grid.width))
            parts.append(sides(intersect(box, plan.crop), block))  # the crop the arrays hold
        if len(parts) == 1:
            return parts[0]
        return tuple(None if vs[0] is None else xp.concatenate(vs) for vs in zip(*parts))

    def _run(self, plan: Plan, hyper, reference, gain, visit: Visit, intra: list[bool] | None,
             on_step: Callable[[], None] | None, coded: tuple[int, int, int, int] | None):
        xp = self.ops.xp
        if self.cfg.temporal_prediction and reference is not None and gain is None:
            raise ValueError("a model with a temporal prediction needs the encoder gain of "
                             "the image coded with a reference")
        grid = plan.grid
        coded = _partial(coded, grid)
        r0, c0, box_h, box_w = plan.crop
        if reference is not None and intra is not None and all(intra):
            reference, intra = None, None
        mixed = reference is not None and intra is not None and any(intra)
        y_hat = xp.zeros((1, self.cfg.M, box_h, box_w), np.float32)  # hyper may be spilled
        flags = intra if mixed else None
        whole: dict = {}  # a float model's side input of the whole crop, per group
        for group in plan.groups:
            k, chunks, tiles = group.group, group.chunks, group.tiles
            valid = grid.valid(xp, tiles)
            in_box = None if coded is None else grid.valid(xp, tiles, coded) > 0
            # One chunk after the other, each through all its steps: a tile's steps depend
            # on nothing but its own, and each tile has its own stream, so the order across
            # chunks changes no stream, while only one chunk's caches (several times its
            # latent) and side input are alive at a time: memory bounded by the chunk, not
            # the latent (a 10240^2 image has 100 tiles of 64). Each chunk's latent goes
            # straight into y_hat: this group's side inputs read only earlier groups' channels.
            for c in chunks:
                side, prediction = self._side_tiles(k, plan, tiles[c.start: c.stop], hyper,
                                                    y_hat, reference, gain, flags, whole)
                program = self._program(k, side, valid[c.start: c.stop], prediction)
                if program.num_steps != group.steps:
                    raise AssertionError(f"group {k}: the program has {program.num_steps} "
                                         f"steps, the plan {group.steps}")
                for t in range(group.steps):
                    with span(self.recorder, f"group {k} step {t}", "step", group=k, step=t):
                        mean, scale = program.params(t)
                        present = program.valid_at(t)
                        if in_box is not None:
                            rows, cols = program.positions[t]
                            present = present & in_box[c.start: c.stop, 0, rows, cols]
                        program.update(t, visit(k, t, tiles[c.start: c.stop], program, mean,
                                                scale, present))
                    if on_step is not None:
                        on_step()
                grid.paste(y_hat[:, group.channels], program.latent(), tiles[c.start: c.stop],
                           (r0, c0))
                del program, side, prediction
            whole.clear()
        return y_hat

    def _symbol_layout(self, present, scale):
        """Per tile of the chunk: the mask of coded positions (``present``, (b, n)) and their
        scale indexes, in coding order (channel-major, then the step's positions)."""
        # One index call and one download for the chunk: per tile they cost ~20 us each, as
        # much as a tile's ANS call on tiles of 8 (a window decode makes thousands).
        # (A copy, not the staging buffer: the caller downloads symbols while it holds these.)
        indexes = to_host(self.ops.scale_to_index(scale, self.thresholds))
        for b in range(scale.shape[0]):
            sel = present[b]
            if bool(sel.all()):  # the common case: a view instead of two boolean gathers
                yield b, slice(None), indexes[b].reshape(-1)
            else:
                yield b, sel, indexes[b][:, to_host(sel)].reshape(-1)

    def encode(self, y, hyper, reference, intra: list[bool] | None = None,
               on_step: Callable[[], None] | None = None,
               coded: tuple[int, int, int, int] | None = None, gain=None) -> CodedLatent:
        """Quantizes and codes y (1, M, h, w); returns y_hat, one stream per tile and the
        streams' symbol checksums.

        ``intra``: per tile, True to code it without the reference (its side input is the
        one of a zero reference); None: every tile uses ``reference``. ``on_step`` is called
        after each step of each chunk of tiles (progress: ``Plan.calls`` in all). ``coded``:
        the latent box (row0, col0, rows, cols) whose positions are coded (the image's
        footprint, ``Header.footprint``); elsewhere y_hat is the predicted mean, at no cost.
        None: every position. ``gain``: y's encoder gain (1, M, 1, 1), which a model's
        temporal prediction reads along with ``reference``."""
        plan = self.plan(tuple(y.shape[2:]))
        grid, xp = plan.grid, self.ops.xp
        coded = _partial(coded, grid)
        encoders = [GaussianEncoder(self.table) for _ in range(grid.count)]
        slices = self.slices
        chunk: dict = {}  # y of the chunk and group being coded, split into tiles

        def visit(k, t, tiles, program, mean, scale, present):
            rows, cols = program.positions[t]
            if chunk.get("key") != (k, tiles):  # split per chunk: no second copy of y
                chunk.clear()
                chunk["key"], chunk["y"] = (k, tiles), grid.split(y[:, slices[k]], tiles)
            values = chunk["y"][:, :, rows, cols]
            if coded is not None:  # uncoded positions: symbol 0, y_hat = mean
                values = xp.where(present[:, None], values, mean)
            symbols, y_hat = self.ops.quantize_step(values, mean)
            with span(self.recorder, "ans encode", "ans"):
                for b, sel, indexes in self._symbol_layout(present, scale):
                    encoders[tiles.start + b].push(self.staging.download(symbols[b][:, sel]),
                                                   indexes)
            return y_hat

        y_hat = self._run(plan, hyper, reference, gain, visit, intra, on_step, coded)
        streams = [e.finish() for e in encoders]
        return CodedLatent(y_hat, streams, [e.checksum for e in encoders])

    def decode(self, streams: Sequence[bytes] | Mapping[int, bytes], shape: tuple[int, int],
               hyper, reference, intra: list[bool] | None = None, tile_size: int | None = None,
               on_step: Callable[[], None] | None = None, plan: Plan | None = None,
               checksums: Sequence[int | None] | Mapping[int, int | None] | None = None,
               coded: tuple[int, int, int, int] | None = None, gain=None):
        """Decodes the latent (1, M, h, w) from one stream per tile (``intra`` and
        ``on_step`` as in ``encode``) of ``tile_size`` positions (the stream's; None: this
        scheduler's). With a ``plan`` of ``window_plan``, ``streams`` needs only the plan's
        tiles (tile -> stream), ``hyper`` and ``reference`` are the plan's crop, and so is the
        latent returned (zero outside the tiles decoded). ``checksums`` (indexed like
        ``streams``; None: none) are the streams' symbol checksums: each stream decoded to
        its end is verified against its own (a ``CorruptError`` if its symbols differ).
        ``coded`` and ``gain`` as in ``encode`` (``Container.coded_box``; the gain of the
        stream's quality)."""
        if plan is None:
            plan = self.plan(shape, tile_size)
            if len(streams) != plan.grid.count:
                raise ValueError(f"{len(streams)} streams for {plan.grid.count} tiles")
        decoders = {t: GaussianDecoder(streams[t], self.table,
                                       checksum=None if checksums is None else checksums[t])
                    for t in plan.tiles}

        def visit(k, t, tiles, program, mean, scale, present):
            symbols = np.zeros_like(mean, dtype=np.int32)
            with span(self.recorder, "ans decode", "ans"):
                for b, sel, indexes in self._symbol_layout(present, scale):
                    decoded = decoders[tiles[b]].pop(indexes)
                    symbols[b][:, sel] = self.staging.upload(
                        decoded.astype(np.int32), self.backend.device).reshape(mean.shape[1], -1)
            return self.ops.dequantize_step(symbols, mean)

        y_hat = self._run(plan, hyper, reference, gain, visit, intra, on_step, coded)
        # Only a tile every group decoded has been read to its end (a window plan decodes
        # the outer tiles' first groups only): those are end- and checksum-checked.
        for t in set(plan.tiles).intersection(*(g.tiles for g in plan.groups)):
            decoders[t].finish()
        return y_hat


def _row_width(block: Sequence[int], cols: int) -> int:
    """Tiles in the first tile row of ``block`` (raster order; ``cols`` tiles a grid row)."""
    row = block[0] // cols
    return next((n for n, t in enumerate(block) if t // cols != row), len(block))


def edge_index(n: int, r: int) -> np.ndarray:
    """Indexes into an axis of min(n, 2r + 1) positions that give an axis of n positions in
    which every position keeps its distance to both edges, counted up to r: the first r,
    the middle one repeated, the last r (n <= 2r + 1: all of them, as they are)."""
    if n <= 2 * r + 1:
        return np.arange(n)
    return np.concatenate([np.arange(r), np.full(n - 2 * r, r), np.arange(r + 1, 2 * r + 1)])


def dilate_box(box, radius: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """``box`` (row0, col0, rows, cols) grown by ``radius`` on every side, inside ``shape``."""
    r0, c0, h, w = box
    a, b = max(r0 - radius, 0), max(c0 - radius, 0)
    return a, b, min(r0 + h + radius, shape[0]) - a, min(c0 + w + radius, shape[1]) - b


def code_z(coder: FactorizedCoder, z, medians) -> tuple[object, bytes, int]:
    """Quantizes z (1, N, hz, wz) around its medians (N,) and codes it; returns
    (z_hat, stream, the stream's symbol checksum)."""
    medians = medians.reshape(1, -1, 1, 1)
    symbols = np.rint(z - medians)
    host = to_host(symbols[0]).reshape(z.shape[1], -1).astype(np.int32)
    return symbols + medians, coder.encode(host), symbol_checksum(host)


def decode_z(coder: FactorizedCoder, data: bytes, shape: tuple[int, int, int], medians,
             device: str = "cpu", checksum: int | None = None):
    """Decodes z_hat (1, N, hz, wz) onto ``device``, where ``medians`` (N,) lives; verifies
    the symbols against ``checksum`` when given."""
    n, hz, wz = shape
    symbols = coder.decode(data, hz * wz, checksum).astype(np.float32).reshape(1, n, hz, wz)
    return HostStaging.upload(symbols, device) + medians.reshape(1, -1, 1, 1)


def check_backed(container: Container, y_channels: int, z_channels: int) -> None:
    """Refuses streams too short for the symbols the header says they hold, before any work.

    A y tile of h x w coded positions (from format 3.0, those in the image's footprint,
    ``Container.coded_box``) holds ``y_channels * h * w`` symbols, which no stream shorter
    than ``min_stream_bytes`` of them can code; a z stream holds ``z_channels`` x the z
    positions and is at least one word when that is not zero. So a small file cannot claim a
    large image backed by empty or near-empty streams and make the decoder run the networks
    over all of it (the decoder's run-dry check then stops a stream that is long enough but
    not real within the steps its bytes can pay for).

    Raises:
        CorruptError: Names the first stream that is too short.
    """
    header = container.header
    hz, wz = header.z_shape
    z_need = min(4, 4 * z_channels * hz * wz)
    boxes = TileGrid(*header.latent_shape, header.tile_size).boxes()
    coded = container.coded_box  # format 3.0 codes only the footprint's positions
    y_need = [min_stream_bytes(y_channels * h * w) for _, _, h, w in
              (boxes if coded is None else (intersect(box, coded) for box in boxes))]
    for e in container.entries:
        need = z_need if e.kind == KIND_Z else y_need[e.tile]
        if e.length < need:
            what = "z stream" if e.kind == KIND_Z else f"y stream of tile {e.tile}"
            raise CorruptError(f"corrupt stcm file: the {what} of band group {e.band_group} "
                               f"has {e.length} bytes, fewer than the {need} its symbols "
                               "need at the least (emptied or truncated)")


def _partial(coded, grid: TileGrid):
    """``coded`` (a latent box of coded positions), or None when it holds the whole latent
    (every position has its symbol: nothing to mask)."""
    if coded is not None and coded[0] <= 0 and coded[1] <= 0 and \
            coded[0] + coded[2] >= grid.height and coded[1] + coded[3] >= grid.width:
        return None
    return coded
