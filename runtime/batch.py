"""Many files, one model: ``stcm compress`` / ``stcm decompress`` over several inputs or
folders into an output folder.

Every file is one job (``compress_file`` / ``decompress_file``). A job that fails is
reported and skipped; the others' outputs are kept. With ``workers`` > 1 the jobs run in
that many worker processes (spawned: no torch state is forked), each of which builds its
``Codec`` once from ``codec_options`` and keeps it for all its jobs.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from stcm.errors import ConfigError, DataError, StcmError
from stcm.rasters import IMAGE_SUFFIXES
from stcm.runtime.files import FileReport, compress_file, decompress_file

#: the file operation of each batch kind, and the inputs a folder contributes to it
OPERATIONS = {"compress": compress_file, "decompress": decompress_file}
FOLDER_SUFFIXES = {"compress": IMAGE_SUFFIXES, "decompress": (".stcm",)}


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


@dataclass(frozen=True)
class Outcome:
    """What became of one job: its report, or the error that stopped it."""

    job: Job
    report: FileReport | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def plan_jobs(kind: str, inputs: list, out_dir, suffix: str) -> list[Job]:
    """One job per input file; a folder contributes the files of its kind found under it
    (recursively, their relative paths kept under ``out_dir``). Each target is the input's
    name with ``suffix``; two inputs that would write one target are refused."""
    if kind not in OPERATIONS:
        raise ValueError(f"kind must be one of {sorted(OPERATIONS)}, got {kind!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"the output folder {out_dir} is a file")
    jobs = []
    for given in map(Path, inputs):
        if given.is_dir():
            found = sorted(p for p in given.rglob("*")
                           if p.is_file() and p.suffix.lower() in FOLDER_SUFFIXES[kind])
            if not found:
                raise DataError(f"{given} holds no {'/'.join(FOLDER_SUFFIXES[kind])} files")
            jobs += [Job(p, (out_dir / p.relative_to(given)).with_suffix(suffix))
                     for p in found]
        elif given.is_file():
            jobs.append(Job(given, out_dir / (given.stem + suffix)))
        else:
            raise DataError(f"input {given} does not exist")
    targets: dict[Path, Path] = {}
    for job in jobs:
        other = targets.setdefault(job.target.resolve(), job.source)
        if other != job.source:
            raise ConfigError(f"{other} and {job.source} would both be written to {job.target}; "
                              "compress them into different folders")
    return jobs


def run_jobs(kind: str, jobs: list[Job], codec_options: dict, options: dict | None = None,
             workers: int = 1, threads: int | None = None,
             on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Runs ``jobs`` (``plan_jobs``) with ``Codec(**codec_options)`` and the file operation's
    keyword ``options``, in job order or (``workers`` > 1) as they finish; ``threads``: CPU
    threads of each codec. Returns every job's outcome; ``on_outcome`` hears each as it ends."""
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--jobs must be a positive integer, got {workers!r}")
    options = options or {}
    outcomes = []
    if workers == 1 or len(jobs) == 1:
        _start_worker(codec_options, threads)
        for job in jobs:
            outcomes.append(_run(kind, job, options))
            if on_outcome is not None:
                on_outcome(outcomes[-1])
        return outcomes
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
            min(workers, len(jobs)), mp_context=context, initializer=_start_worker,
            initargs=(codec_options, threads)) as pool:
        futures = [pool.submit(_run, kind, job, options) for job in jobs]
        for future in concurrent.futures.as_completed(futures):
            try:
                outcome = future.result()
            except concurrent.futures.process.BrokenProcessPool as exc:
                # A worker died (killed, out of memory): its job and the queued ones fail.
                job = jobs[futures.index(future)]
                outcome = Outcome(job, error=f"worker process died: {exc}")
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    return outcomes


_codec = None  # this process's codec, built once by _start_worker


def make_codec(codec_options: dict, threads: int | None = None):
    """``Codec(**codec_options)`` on ``threads`` CPU threads (torch's, or onnxruntime's for an
    engine, which then needs no torch)."""
    from stcm.runtime.codec import Codec

    options = dict(codec_options)
    if threads:
        if options.get("engine"):
            options["engine_options"] = {**(options.get("engine_options") or {}),
                                         "threads": threads}
        else:
            import torch

            torch.set_num_threads(threads)
    return Codec(**options)


def _start_worker(codec_options: dict, threads: int | None) -> None:
    global _codec
    _codec = make_codec(codec_options, threads)


def _run(kind: str, job: Job, options: dict) -> Outcome:
    try:
        report = OPERATIONS[kind](_codec, job.source, job.target, **options)
    except StcmError as exc:
        return Outcome(job, error=str(exc))
    except Exception as exc:  # one file's trouble (or a bug) must not stop the others
        return Outcome(job, error=f"{type(exc).__name__}: {exc}")
    return Outcome(job, report)

