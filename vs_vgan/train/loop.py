"""Adversarial training of the interpolation generator: plain step functions, checkpoints, the loop.

* :func:`g_step` / :func:`d_step`: one optimiser step of the generator / discriminator on a
  batch; testable on their own in a two-step CPU run.
* :class:`Trainer`: the models, optimisers and EMA of a run; :meth:`Trainer.save` /
  :meth:`Trainer.load` write and read a checkpoint holding ``params``, ``params_ema``,
  ``config``, ``step`` (plus the optimiser and discriminator states, so a resumed run
  continues exactly, and ``validation``: which clips were held out).  Batches are drawn
  from ``numpy.random.default_rng([seed, step])``, so a run resumed from a checkpoint sees
  the same data as an uninterrupted one.
* :func:`train`: the loop, with a reconstruction warm-up, then the adversarial phase;
  progress to a logger and to a JSON-lines file, a checkpoint every few minutes (written
  to a temporary file and renamed).  An exception in a step propagates as itself: the
  checkpoint written on the way out (and its evaluation) may fail too, which is logged and
  noted on the original exception, never raised in its place.
* :func:`export_weights`: the EMA generator as a safetensors file, with its sha256.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TextIO

import numpy as np
import torch
import torch.nn.functional as F

from ..models.flownet import FlowInterpolator, PairState, warp
from ..models.prednet import FlowPredictor
from . import losses as L
from .config import TrainConfig
from .discriminator import TemporalDiscriminator

__all__ = ["Trainer", "g_step", "d_step", "train", "export_weights", "lr_at", "evaluate",
           "teacher_flow_loss", "validate"]

log = logging.getLogger("vs_vgan.train")

Batch = dict[str, torch.Tensor]


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Generator learning rate: a linear ramp, then cosine decay from lr_g to lr_min."""
    if step < cfg.lr_ramp:
        return cfg.lr_g * (step + 1) / cfg.lr_ramp
    p = min(1.0, (step - cfg.lr_ramp) / max(1, cfg.steps - cfg.lr_ramp))
    return cfg.lr_min + 0.5 * (cfg.lr_g - cfg.lr_min) * (1.0 + math.cos(math.pi * p))


def _adv_weight(cfg: TrainConfig, step: int) -> float:
    """0 in the warm-up, then ramping up to 1 over adv_ramp steps."""
    if step < cfg.warmup_steps:
        return 0.0
    return min(1.0, (step - cfg.warmup_steps + 1) / max(1, cfg.adv_ramp))


def _teacher_flow_weight(cfg: TrainConfig, step: int) -> float:
    if cfg.teacher_steps <= 0:
        return cfg.w_teacher_flow
    return cfg.w_teacher_flow * max(0.0, 1.0 - step / cfg.teacher_steps)


def _flow_aux_weight(cfg: TrainConfig, step: int) -> float:
    if cfg.flow_aux_steps <= 0:
        return 0.0
    return cfg.w_flow_aux * max(0.0, 1.0 - step / cfg.flow_aux_steps)


class Trainer:
    """Generator, EMA generator, discriminator and their optimisers for one run."""

    def __init__(self, cfg: TrainConfig, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        torch.manual_seed(cfg.seed)
        arch = FlowPredictor if cfg.task == "predict" else FlowInterpolator
        assert cfg.model is not None  # filled in by TrainConfig
        self.net = arch(**cfg.model).to(self.device)
        if cfg.teacher and getattr(self.net, "convex", False):
            raise ValueError("TrainConfig: the teacher's flow targets are compared at level 0; a convex generator's "
                             "flows are at the analysed size (teacher and model.convex can't go together yet)")
        if cfg.crop % self.net.modulo:
            raise ValueError(f"TrainConfig: crop must be a multiple of the generator's modulo {self.net.modulo}; got {cfg.crop}")
        self.ema = copy.deepcopy(self.net).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.disc = TemporalDiscriminator(**cfg.disc).to(self.device)
        self.opt_g = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr_g, betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=cfg.lr_d, betas=(0.5, 0.99), weight_decay=0.0)
        self.step = 0
        self.last_fake: torch.Tensor | None = None
        #: the frozen RIFE teacher (cfg.teacher), on the run's device
        self.teacher = None
        if cfg.teacher:
            from .teacher import RifeTeacher

            self.teacher = RifeTeacher(cfg.teacher, device=self.device)
        #: which clips validation holds out (vs_vgan.train.command), saved in checkpoints;
        #: None before it is chosen and in checkpoints older than held-out validation
        self.validation: dict[str, Any] | None = None

    def init_from(self, weights: str | os.PathLike[str], *, grow: bool = False) -> list[str]:
        """Start the generator (and its EMA) from a safetensors file of the same
        architecture family, e.g. the interpolation model for a predictor.  ``grow``: the
        file may hold a smaller configuration of the generator (no level-0 radius, no
        ``convex``), whose output the grown one starts from (:func:`grow_state`).  Returns
        the names of the parameters the file did not have (none without ``grow``)."""
        from safetensors.torch import load_file

        from ..models.flownet import grow_state

        params = load_file(str(weights))
        if not grow:
            self.net.load_state_dict(params)
            self.ema.load_state_dict(params)
            return []
        new = grow_state(self.net, params)
        self.ema.load_state_dict(self.net.state_dict())
        return new

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        return {
            "params": self.net.state_dict(),
            "params_ema": self.ema.state_dict(),
            "config": self.cfg.to_dict(),
            "step": self.step,
            "disc": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            **({"validation": self.validation} if self.validation is not None else {}),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state(), tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: torch.device | str = "cpu",
             override: dict[str, Any] | None = None) -> "Trainer":
        """Resume from a checkpoint; ``override`` changes settings that do not alter the
        networks' shapes (steps, learning rates, data paths, ...), nor, once the checkpoint
        records its held-out clips, which clips validation holds out."""
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        saved = TrainConfig.from_dict(ckpt["config"])
        cfg = TrainConfig.from_dict({**ckpt["config"], **override}) if override else saved
        fixed = ("model", "disc") + (("val_clips", "val_seed") if "validation" in ckpt else ())
        for key in fixed:
            if getattr(cfg, key) != getattr(saved, key):
                raise ValueError(f"Trainer.load: {key} can't change on resume; checkpoint has "
                                 f"{saved.to_dict()[key]}")
        trainer = cls(cfg, device)
        trainer.net.load_state_dict(ckpt["params"])
        trainer.ema.load_state_dict(ckpt["params_ema"])
        trainer.disc.load_state_dict(ckpt["disc"])
        trainer.opt_g.load_state_dict(ckpt["opt_g"])
        trainer.opt_d.load_state_dict(ckpt["opt_d"])
        trainer.step = int(ckpt["step"])
        trainer.validation = ckpt.get("validation")
        return trainer

    @torch.no_grad()
    def update_ema(self) -> None:
        decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        for e, p in zip(self.ema.parameters(), self.net.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)
        for eb, b in zip(self.ema.buffers(), self.net.buffers()):
            eb.copy_(b)


def _to(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _adv_g(cfg: TrainConfig, real_logits: L.Logits, fake_logits: L.Logits) -> torch.Tensor:
    if cfg.adv_loss == "hinge":
        return L.hinge_g(fake_logits)
    return L.rahinge_g(real_logits, fake_logits)


def _adv_d(cfg: TrainConfig, real_logits: L.Logits, fake_logits: L.Logits) -> torch.Tensor:
    if cfg.adv_loss == "hinge":
        return L.hinge_d(real_logits, fake_logits)
    return L.rahinge_d(real_logits, fake_logits)


def generate(net: FlowInterpolator, batch: Batch, scale: float = 1.0) -> tuple[torch.Tensor, PairState]:
    """The generator's output for a batch and its pair state: the frame at ``t`` between
    img0 and img1 (flows analysed at ``scale``), or (a :class:`FlowPredictor`) the frame
    after img0, img1."""
    pred, state, _ = _generate(net, batch, scale)
    return pred, state


def _generate(net: FlowInterpolator, batch: Batch,
              scale: float = 1.0) -> tuple[torch.Tensor, PairState, torch.Tensor | None]:
    """:func:`generate`, and for an interpolator also its flows from ``t`` to both ends
    (``fields``' first four channels, level-0 pixels of the analysed, padded frame)."""
    if isinstance(net, FlowPredictor):
        state = net.encode(batch["img0"], batch["img1"])
        return net.predict_state(state), state, None
    state = net.encode(batch["img0"], batch["img1"], scale)
    flows_t, fine = net.refined_fields(state, batch["t"])  # with the model's Lucas-Kanade steps, as inference
    assert state.img0 is not None and state.img1 is not None  # encode keeps the frames
    pred = net.render(flows_t, fine, batch["t"], state.scale, state.img0, state.img1)
    return pred, state, flows_t[:, :4]


def teacher_flow_loss(flows_t: torch.Tensor, teacher_t0: torch.Tensor, teacher_t1: torch.Tensor,
                      ratio: float) -> torch.Tensor:
    """Robust L1 (Charbonnier) between the generator's flows from ``t`` to both ends
    ``(B, 4, h, w)`` in level-0 pixels (``ratio`` frame pixels each: stem / scale) and the
    teacher's ``(B, 2, H, W)`` pair in frame pixels, compared in frame pixels at the
    generator's resolution over the frame's area (the analysis padding left out)."""
    h, w = teacher_t0.shape[-2:]
    lh, lw = math.ceil(h / ratio), math.ceil(w / ratio)
    target = torch.cat((teacher_t0, teacher_t1), 1)
    target = F.interpolate(target, size=(lh, lw), mode="area")
    return L.charbonnier(flows_t[..., :lh, :lw] * ratio, target)


#: The third seed word of the discriminator's window (cfg.disc_crop): (seed, step, DISC_RNG).
DISC_RNG = 7_919


def _disc_frames(tr: Trainer, batch: Batch, candidate: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The three frames the temporal discriminator judges, in time order, cut to the
    step's window when ``cfg.disc_crop`` is set (the same window for the real and the
    generated candidate of a step: drawn from (seed, step))."""
    frames = ((batch["img0"], batch["img1"], candidate) if isinstance(tr.net, FlowPredictor)
              else (batch["img0"], candidate, batch["img1"]))
    size = tr.cfg.disc_crop
    h, w = candidate.shape[-2:]
    if not size or (size >= h and size >= w):
        return frames
    rng = np.random.default_rng([tr.cfg.seed, tr.step, DISC_RNG])
    y, x = int(rng.integers(0, max(h - size, 0) + 1)), int(rng.integers(0, max(w - size, 0) + 1))
    return tuple(f[..., y:y + size, x:x + size] for f in frames)


def g_step(tr: Trainer, batch: Batch) -> dict[str, float]:
    """One generator step: reconstruction (+ flow photometric aux) and, after the warm-up,
    the adversarial and feature-matching terms.  Returns the loss parts as floats."""
    cfg, net = tr.cfg, tr.net
    net.train()
    for g in tr.opt_g.param_groups:
        g["lr"] = lr_at(cfg, tr.step)
    scale = cfg.scale_at(tr.step)
    pred, state, flows_t = _generate(net, batch, scale)
    gt = batch["gt"]
    total, parts = L.reconstruction(pred, gt, w_charb=cfg.w_charb, w_census=cfg.w_census, w_grad=cfg.w_grad,
                                     w_msssim=cfg.w_msssim, w_freq=cfg.w_freq)
    if isinstance(net, FlowPredictor) and cfg.w_rollout > 0 and "next" in batch:
        # the next step from the model's own output, so that extending a shot does not drift
        again = net.predict(batch["img1"], pred)
        roll, _ = L.reconstruction(again, batch["next"], w_charb=cfg.w_charb, w_census=cfg.w_census,
                                   w_grad=cfg.w_grad, w_msssim=cfg.w_msssim, w_freq=cfg.w_freq)
        total = total + cfg.w_rollout * roll
        parts["rollout"] = roll.item()
    if tr.teacher is not None and flows_t is not None:
        taught = tr.teacher(batch["img0"], batch["img1"], batch["t"])
        w_flow = _teacher_flow_weight(cfg, tr.step)
        if w_flow > 0:
            flow_loss = teacher_flow_loss(flows_t, taught.flow_t0, taught.flow_t1, net.stem / scale)
            total = total + w_flow * flow_loss
            parts["teacher_flow"] = flow_loss.item()
        if cfg.w_teacher_frame > 0:
            frame_loss = L.charbonnier(pred, taught.frame)
            total = total + cfg.w_teacher_frame * frame_loss
            parts["teacher_frame"] = frame_loss.item()
    w_aux = _flow_aux_weight(cfg, tr.step)
    if w_aux > 0:
        small0, small1 = net.thumbnails(state)
        flows = state.flows
        aux = 0.5 * (L.census(warp(small1, flows[:, :2]), small0) + L.census(warp(small0, flows[:, 2:]), small1))
        total = total + w_aux * aux
        parts["flow_aux"] = aux.item()
    w = _adv_weight(cfg, tr.step)
    if w > 0:
        for p in tr.disc.parameters():
            p.requires_grad_(False)
        real_logits, real_feats = tr.disc(*_disc_frames(tr, batch, gt))
        fake_logits, fake_feats = tr.disc(*_disc_frames(tr, batch, pred))
        adv = _adv_g(cfg, [r.detach() for r in real_logits], fake_logits)
        fm = L.feature_matching(real_feats, fake_feats)
        total = total + w * (cfg.w_adv * adv + cfg.w_fm * fm)
        parts["adv_g"], parts["fm"] = adv.item(), fm.item()
        for p in tr.disc.parameters():
            p.requires_grad_(True)
    tr.opt_g.zero_grad(set_to_none=True)
    total.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    tr.opt_g.step()
    tr.update_ema()
    tr.last_fake = pred.detach()
    parts["total"] = total.item()
    parts["psnr"] = float(L.psnr(pred.detach(), gt))
    parts["lr"] = tr.opt_g.param_groups[0]["lr"]
    return parts


def d_step(tr: Trainer, batch: Batch, fake: torch.Tensor | None = None) -> dict[str, float]:
    """One discriminator step on the real middle frame against the generator's output
    (``fake``, or generated here)."""
    tr.disc.train()
    if fake is None:
        with torch.no_grad():
            tr.net.eval()
            fake, _ = generate(tr.net, batch, tr.cfg.scale_at(tr.step))
    real_logits, _ = tr.disc(*_disc_frames(tr, batch, batch["gt"]))
    fake_logits, _ = tr.disc(*_disc_frames(tr, batch, fake))
    loss = _adv_d(tr.cfg, real_logits, fake_logits)
    tr.opt_d.zero_grad(set_to_none=True)
    loss.backward()
    tr.opt_d.step()
    with torch.no_grad():
        real = float(torch.stack([r.mean() for r in real_logits]).mean())
        fake_m = float(torch.stack([f.mean() for f in fake_logits]).mean())
    return {"adv_d": loss.item(), "d_real": real, "d_fake": fake_m}


@torch.no_grad()
def evaluate(net: FlowInterpolator, batches: Iterable[Batch], device: torch.device,
             scale: float = 1.0) -> dict[str, float]:
    """Mean PSNR/SSIM of ``net`` over fixed validation batches, beside the trivial
    baseline (linear blend for interpolation, repeating the last frame for prediction)."""
    net.eval()
    predicting = isinstance(net, FlowPredictor)
    ps, ss, base = [], [], []
    for b in batches:
        b = _to(b, device)
        pred, _ = generate(net, b, scale)
        ps.append(float(L.psnr(pred, b["gt"])))
        ss.append(float(L.ssim(pred, b["gt"])))
        trivial = b["img1"] if predicting else torch.lerp(b["img0"], b["img1"], b["t"])
        base.append(float(L.psnr(trivial, b["gt"])))
    key = "val_repeat_psnr" if predicting else "val_blend_psnr"
    return {"val_psnr": float(np.mean(ps)), "val_ssim": float(np.mean(ss)), key: float(np.mean(base))}


def validate(net: FlowInterpolator, batches: Iterable[Batch], device: torch.device,
             scales: Sequence[float] = (1.0,)) -> dict[str, float]:
    """:func:`evaluate` at each analysis scale a run trains at: one scale gives its keys
    as they are; several give the first scale's under the plain keys (the learning curve
    of older runs) and each scale's ``val_psnr`` and ``val_ssim`` as ``val_psnr@0.5``."""
    batches = list(batches)
    row = evaluate(net, batches, device, scales[0])
    if len(scales) > 1:
        for s in scales:
            r = row if s == scales[0] else evaluate(net, batches, device, s)
            row[f"val_psnr@{s:g}"], row[f"val_ssim@{s:g}"] = r["val_psnr"], r["val_ssim"]
    return row


def train(tr: Trainer, make_batch: Callable[[np.random.Generator], Batch], out_dir: str | os.PathLike[str], *,
          until: int | None = None, val_batches: list[Batch] | None = None,
          deadline: float | None = None, stop: Callable[[], bool] | None = None) -> Trainer:
    """Run ``tr`` from its step to ``until`` (default: cfg.steps), or until the wall-clock
    ``deadline`` (time.time()), checkpointing to ``out_dir/last.pt`` every
    cfg.checkpoint_seconds and at the end (also when ``stop()`` turns true, checked between
    steps, or on an exception).  ``make_batch(rng)`` gives a batch of
    tensors img0, gt, img1 (B, 3, crop, crop) and t (B, 1, 1, 1); for a predictor, img0 and
    img1 are the context frames, gt the frame after them and ``next`` (optional) the one
    after that (:func:`vs_vgan.train.data.make_sequence_batch`)."""
    cfg = tr.cfg
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    until = cfg.steps if until is None else min(until, cfg.steps)
    logf = open(out / "log.jsonl", "a", encoding="utf-8")
    last_ckpt = time.time()
    t0, s0 = time.time(), tr.step
    acc: dict[str, list[float]] = {}
    try:
        while tr.step < until:
            if deadline is not None and time.time() >= deadline:
                log.info("deadline reached at step %d", tr.step)
                break
            if stop is not None and stop():
                log.info("stopped at step %d", tr.step)
                break
            rng = np.random.default_rng([cfg.seed, tr.step])
            batch = _to(make_batch(rng), tr.device)
            parts = g_step(tr, batch)
            if _adv_weight(cfg, tr.step) > 0:  # the discriminator sees the output just made
                parts.update(d_step(tr, batch, tr.last_fake))
            tr.step += 1
            for k, v in parts.items():
                acc.setdefault(k, []).append(v)
            if tr.step % cfg.log_every == 0 or tr.step == until:
                rate = (tr.step - s0) / max(1e-9, time.time() - t0)
                row = {k: round(float(np.mean(v)), 5) for k, v in acc.items()}
                row.update(step=tr.step, steps_per_s=round(rate, 3), eta_min=round((until - tr.step) / max(rate, 1e-9) / 60, 1))
                log.info("step %d/%d  %s", tr.step, until, "  ".join(f"{k}={v}" for k, v in row.items() if k != "step"))
                logf.write(json.dumps(row) + "\n")
                logf.flush()
                acc.clear()
            if time.time() - last_ckpt >= cfg.checkpoint_seconds:
                _checkpoint(tr, out, val_batches, logf)
                last_ckpt = time.time()
    except BaseException as exc:  # a failed step, Ctrl-C: keep the work, then re-raise exc itself
        try:
            _checkpoint(tr, out, val_batches, logf)
        except Exception as secondary:
            log.error("the checkpoint after %s at step %d failed too", type(exc).__name__, tr.step,
                      exc_info=secondary)
            exc.add_note(f"vs_vgan.train: the checkpoint after this error failed too: "
                         f"{type(secondary).__name__}: {secondary}")
        raise
    else:
        _checkpoint(tr, out, val_batches, logf)
    finally:
        logf.close()
    return tr


def _checkpoint(tr: Trainer, out: Path, val_batches: list[Batch] | None, logf: TextIO) -> None:
    """Save ``out/last.pt``, then evaluate the EMA generator on ``val_batches`` and log both."""
    tr.save(out / "last.pt")
    row = {"step": tr.step, "checkpoint": str(out / "last.pt")}
    if val_batches:
        row.update(validate(tr.ema, val_batches, tr.device, tr.cfg.analysis_scales))
    log.info("checkpoint %s", "  ".join(f"{k}={v}" for k, v in row.items()))
    logf.write(json.dumps(row) + "\n")
    logf.flush()


def export_weights(checkpoint: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                   ema: bool = True) -> tuple[Path, str, dict[str, Any]]:
    """Write the (EMA) generator of ``checkpoint`` to ``dest`` as safetensors; returns
    (path, sha256, the generator's kwargs)."""
    from safetensors.torch import save_file

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    params = ckpt["params_ema" if ema else "params"]
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().float() for k, v in params.items()}, str(dest),
              metadata={"step": str(ckpt["step"]), "config": json.dumps(ckpt["config"])})
    digest = hashlib.sha256(dest.read_bytes()).hexdigest()
    return dest, digest, dict(ckpt["config"]["model"])
