"""The training command line: ``scripts/train_interp.py`` and ``scripts/train_predict.py``
are :func:`main` for one task each.

* :func:`parse_sets`: ``--set name=value`` pairs (JSON values) as a dict of changes.
* :func:`prepare_data`: the training videos of ``cfg.data_root`` decoded into the cache,
  whole clips held out for validation, the batch function and the fixed validation batches.
* :func:`main`: parse, build or resume the :class:`~vs_vgan.train.loop.Trainer`, prepare the
  data, train (SIGINT and SIGTERM stop after the current step with a checkpoint), or
  ``--export`` a checkpoint's EMA generator.

Validation is honest: ``cfg.val_clips`` whole clips of the training videos, chosen by
:func:`vs_vgan.train.data.split_clips` from the files' sha256 and ``cfg.val_seed``, never
give a training batch; the fixed validation batches (``cfg.val_batches`` of them, drawn
from ``numpy.random.default_rng([VAL_RNG, val_seed, i])``) come from them alone, as real
video (the synthetic-motion share of interpolation batches is not validated).  The choice
is written to ``OUT/log.jsonl`` and saved in every checkpoint (``validation``: the seed, the
count and each clip's name under the data folder and sha256); a resumed run holds out the
clips its checkpoint names (by content: the data folder may move) and trains on every other
clip, so a clip once held out is never trained on.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from ..errors import value_error
from ..models.registry import REGISTRY
from .config import INIT_MODEL, TrainConfig
from .loop import Batch, Trainer, export_weights, train

if TYPE_CHECKING:  # pragma: no cover  (VapourSynth is imported where a video is decoded)
    import vapoursynth as vs

__all__ = ["DataError", "TrainingData", "VAL_RNG", "main", "parse_sets", "prepare_data"]

log = logging.getLogger("vs_vgan.train")

#: The first seed word of the validation batches' generators (training batches use (seed, step)).
VAL_RNG = 10_000_019

_NAMES = {"interpolate": "train_interp", "predict": "train_predict"}


class DataError(ValueError):
    """The data folder can't give what the config asks (no videos, too few clips to hold
    out); :func:`main` reports it in one line."""


@dataclass(frozen=True)
class TrainingData:
    """What :func:`prepare_data` gives a run."""

    #: a training batch for a generator seeded by (seed, step): see :func:`vs_vgan.train.loop.train`
    make_batch: Callable[[np.random.Generator], Batch]
    #: fixed batches from the held-out clips only (empty without validation)
    val_batches: tuple[Batch, ...]
    #: the record saved in checkpoints: {"seed", "count", "clips": [{"name", "sha256"}, ...]}
    validation: dict[str, Any]
    #: names (under the data folder) of the clips training batches come from
    train_clips: tuple[str, ...]


def parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    """``["steps=30000", 'model={"channels": [8, 16], ...}', "adv_loss=hinge"]`` as a dict:
    JSON values, else the text itself; ValueError for a pair without ``=``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set needs name=value; got {pair!r}")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def _run_length(cfg: TrainConfig) -> int:
    """Frames a sample of the task spans (before gaps)."""
    if cfg.task == "predict":
        return 4 if cfg.w_rollout > 0 else 3
    return 3


def _data_error(arg: str, accepted: str, got: object, hint: str | None = None) -> DataError:
    return DataError(str(value_error("train.prepare_data", arg, accepted, got, hint)))


def prepare_data(cfg: TrainConfig, *, source: str | Callable[[str], vs.VideoNode] | None = None,
                 validation: dict[str, Any] | None = None) -> TrainingData:
    """The videos under ``cfg.data_root`` (decoded once into ``cfg.cache_dir``, default
    ``data_root/.cache``), split into training and held-out clips, as a batch function and
    fixed validation batches.

    ``validation``: a checkpoint's record of its held-out clips, which stay held out
    (matched by sha256; ones no longer in the folder are skipped with a warning); None
    chooses ``cfg.val_clips`` clips among those long and large enough for ``cfg.crop``
    (:func:`~vs_vgan.train.data.split_clips` with ``cfg.val_seed``).  Interpolation batches
    mix real triplets of the training clips with synthetic motion (``cfg.p_synthetic``);
    prediction batches are runs of the training clips.  DataError for a folder without
    videos or with too few clips to hold ``val_clips`` out.
    """
    from . import data as D

    root = Path(cfg.data_root)
    if not root.is_dir():
        raise _data_error("data_root", "a folder of training videos (scripts/fetch_training_data.sh DIR "
                          "fetches them; pass it as --data DIR)", str(root))
    videos = D.find_videos(root)
    if not videos:
        raise _data_error("data_root", "a folder holding training videos", str(root),
                          f"Fetch them with scripts/fetch_training_data.sh {root}")
    cache = cfg.cache_dir or str(root / ".cache")
    log.info("%d videos under %s (cache %s)", len(videos), root, cache)
    clips = D.cache_videos(videos, cache, max_side=cfg.max_side or None, source=source)
    names = [p.relative_to(root).as_posix() for p in videos]
    keys = [D.file_key(p) for p in videos]
    length = _run_length(cfg)
    if validation is None:
        eligible = [c.shape[0] >= length and min(c.shape[1:3]) >= cfg.crop for c in clips]
        usable = len({k for k, ok in zip(keys, eligible) if ok})
        most = min(usable, len(set(keys)) - 1)
        if cfg.val_clips > most:
            raise _data_error("val_clips", f"at most {most} for these {len(videos)} videos ({usable} distinct clips "
                              f"of {length} frames or more, {cfg.crop} pixels or more on the shorter side, "
                              f"and one left to train on)", cfg.val_clips,
                              "Add videos, or pass --set val_clips=N (0: no validation)")
        train_idx, held_idx = D.split_clips(keys, cfg.val_clips, cfg.val_seed, eligible=eligible)
        validation = {"seed": cfg.val_seed, "count": cfg.val_clips,
                      "clips": [{"name": names[j], "sha256": keys[j]} for j in held_idx]}
    else:
        held = {c["sha256"] for c in validation["clips"]}
        held_idx = [j for j, k in enumerate(keys) if k in held]
        train_idx = [j for j, k in enumerate(keys) if k not in held]
        gone = sorted(c["name"] for c in validation["clips"] if c["sha256"] not in set(keys))
        if gone:
            log.warning("%d held-out clips of the checkpoint are not under %s (validating on the others): %s",
                        len(gone), root, ", ".join(gone))
    if not train_idx:
        raise _data_error("data_root", "a folder with clips to train on besides the held-out ones", str(root))
    log.info("validation holds out %d clips (seed %d): %s", len(held_idx), validation["seed"],
             ", ".join(names[j] for j in held_idx) or "none")
    train_clips = [clips[j] for j in train_idx]
    held_clips = [clips[j] for j in held_idx]
    log.info("%d frames of real video to train on, %d held out",
             sum(len(c) for c in train_clips), sum(len(c) for c in held_clips))

    if cfg.task == "predict":
        def runs(chosen: Sequence[np.ndarray]) -> D.VideoSequences:
            return D.VideoSequences(chosen, length=length, max_gap=cfg.max_gap)

        train_runs = runs(train_clips)

        def make(rng: np.random.Generator) -> Batch:
            return D.make_sequence_batch(train_runs, cfg.batch, cfg.crop, rng)

        def make_val(rng: np.random.Generator) -> Batch:
            assert val_runs is not None  # called only with held-out clips
            return D.make_sequence_batch(val_runs, cfg.batch, cfg.crop, rng)

        val_runs = runs(held_clips) if held_clips else None
    else:
        real = D.VideoTriplets(train_clips, max_span=cfg.max_span, motion_picks=cfg.motion_picks)
        sources: list[D.Source] = [real]
        probs = [1.0 - cfg.p_synthetic]
        if cfg.p_synthetic > 0:
            sources.append(D.SyntheticMotion(D.still_images()))
            probs.append(cfg.p_synthetic)

        def make(rng: np.random.Generator) -> Batch:
            return D.make_batch(sources, probs, cfg.batch, cfg.crop, rng)

        held_real = D.VideoTriplets(held_clips, max_span=cfg.max_span) if held_clips else None

        def make_val(rng: np.random.Generator) -> Batch:
            assert held_real is not None  # called only with held-out clips
            return D.make_batch([held_real], [1.0], cfg.batch, cfg.crop, rng)

    val_batches = tuple(make_val(np.random.default_rng([VAL_RNG, validation["seed"], i]))
                        for i in range(cfg.val_batches)) if held_clips else ()
    return TrainingData(make_batch=make, val_batches=val_batches, validation=validation,
                        train_clips=tuple(names[j] for j in train_idx))


def _parser(task: str, doc: str | None, out: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="training data folder (scripts/fetch_training_data.sh)")
    ap.add_argument("--cache", help="decoded-video cache folder (default DATA/.cache)")
    ap.add_argument("--source", help="VapourSynth source filter for non-WebP videos, as namespace.Function "
                    "(default bs.VideoSource; e.g. ffms2.Source, lsmas.LWLibavSource)")
    ap.add_argument("--out", default=out, help=f"checkpoint/log folder (default {out})")
    ap.add_argument("--resume", help="checkpoint to continue from")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="change a TrainConfig setting")
    ap.add_argument("--until", type=int, help="stop at this step (default: the config's steps)")
    ap.add_argument("--minutes", type=float, help="stop (with a checkpoint) after this many minutes")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    init = INIT_MODEL.get(task)
    ap.add_argument("--init", help="start a new run's generator from these safetensors weights"
                    + (f" (default: the shipped {init} model; 'none' for random)" if init else ""))
    ap.add_argument("--grow", action="store_true",
                    help="with --init: the weights may be of a smaller configuration of the generator (no level-0 "
                    "radius, no convex upsampling); the new parts start neutral, so the run starts from their output")
    ap.add_argument("--export", nargs=2, metavar=("CHECKPOINT", "DEST"),
                    help="write CHECKPOINT's EMA generator to DEST (safetensors) and print its sha256")
    return ap


def main(argv: Sequence[str] | None = None, *, task: str = "interpolate", doc: str | None = None,
         out: str | Path | None = None, emit: Callable[[str], None] | None = None) -> int:
    """The command line of a ``task`` training run (see the scripts' help); returns the exit code.
    ``emit`` takes ``--export``'s record (one JSON line: weights, sha256, kwargs, bytes): the
    scripts print it on stdout, the command's answer; by default it is logged (the package
    writes nothing to stdout)."""
    from ..models.loader import weights_path

    name = _NAMES[task]
    ap = _parser(task, doc or __doc__, str(out or Path("runs") / name.removeprefix("train_")))
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    if a.export:
        path, digest, kwargs = export_weights(*a.export)
        record = json.dumps({"weights": str(path), "sha256": digest, "kwargs": kwargs, "bytes": path.stat().st_size})
        (emit or log.info)(record)
        return 0
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        changes = parse_sets(a.set)
    except ValueError as err:
        ap.error(str(err))
    if a.data:
        changes["data_root"] = str(Path(a.data).resolve())
    if a.cache:
        changes["cache_dir"] = str(Path(a.cache).resolve())
    if a.resume:
        tr = Trainer.load(a.resume, a.device, override=changes)
        log.info("resumed %s at step %d", a.resume, tr.step)
        if tr.validation is None and tr.step > 0:
            log.warning("%s predates held-out validation: the clips held out from now on may have been "
                        "trained on in its first %d steps, so its val_psnr is no held-out measure "
                        "(--set val_clips=0 trains on every clip, as it did)", a.resume, tr.step)
    else:
        tr = Trainer(TrainConfig.for_task(task, changes), a.device)
        init = a.init
        if not init and task in INIT_MODEL:
            shipped = REGISTRY[INIT_MODEL[task]].weights
            assert shipped is not None  # the models of INIT_MODEL ship their weights
            init = str(weights_path(shipped))
        if init and init != "none":
            new = tr.init_from(init, grow=a.grow)
            log.info("generator initialised from %s%s", init,
                     f" (grown: {len(new)} new tensors, {', '.join(sorted({n.rsplit('.', 1)[0] for n in new}))})"
                     if new else "")
        elif a.grow:
            ap.error("--grow needs --init WEIGHTS")
    cfg = tr.cfg
    log.info("config %s", json.dumps(cfg.to_dict()))
    log.info("generator %d parameters, discriminator %d", sum(p.numel() for p in tr.net.parameters()),
             sum(p.numel() for p in tr.disc.parameters()))
    if not cfg.data_root:
        raise SystemExit(f"{name}: --data DIR is needed (fetch it with scripts/fetch_training_data.sh DIR)")
    try:
        data = prepare_data(cfg, source=a.source, validation=tr.validation)
    except DataError as err:
        raise SystemExit(f"{name}: {err}") from None
    tr.validation = data.validation
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "log.jsonl", "a", encoding="utf-8") as logf:
        logf.write(json.dumps({"step": tr.step, "validation": data.validation}) + "\n")
    deadline = time.time() + 60 * a.minutes if a.minutes else None

    stopping: list[int] = []

    # SIGTERM, and SIGINT even where a background shell ignores it
    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping after this step", signum)
        stopping.append(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        train(tr, data.make_batch, out_dir, until=a.until, val_batches=list(data.val_batches), deadline=deadline,
              stop=lambda: bool(stopping))
    except KeyboardInterrupt:
        log.info("interrupted at step %d; checkpoint written to %s", tr.step, out_dir / "last.pt")
        return 130
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
