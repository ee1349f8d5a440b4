"""The two training phases: SRResNet (pixel loss) and SRGAN (content + adversarial).

The SRGAN phase's content loss is pixel MSE (the paper's SRGAN-MSE, which needs no pretrained
network) or VGG19 features (SRGAN-VGG22/VGG54, with user-supplied ImageNet weights).

One loop serves both; the phase decides the losses and whether a discriminator
exists. Runs unchanged on one CPU, one GPU or under ``torchrun``.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from srgan_deploy.errors import InputFileError, Interrupted, TrainingError
from srgan_deploy.evaluate import evaluate
from srgan_deploy.interrupts import sigterm_as_interrupt
from srgan_deploy.models import Discriminator, Generator
from srgan_deploy.train.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from srgan_deploy.train.config import TrainConfig
from srgan_deploy.train.data import PatchSampler
from srgan_deploy.train.distributed import DistInfo, barrier, init_distributed, shutdown
from srgan_deploy.train.ema import WeightAverage
from srgan_deploy.train.losses import ContentLoss, discriminator_loss, generator_adversarial_loss, pixel_loss
from srgan_deploy.train.vgg import load_vgg
from srgan_deploy.weights import load_generator, save_generator

WEIGHTS = "generator.safetensors"
PAPER_MSE_SCALE = 4.0  # MSE on [-1, 1] images = 4 x MSE on [0, 1] (Ledig et al. 2017, section 3.2)
LOG = "log.jsonl"
SNAPSHOTS = "snapshots"


@dataclass
class TrainResult:
    step: int
    last_losses: dict[str, float]
    val: dict[str, float]
    weights: Path
    seconds: float


class Trainer:
    """Owns models, optimizers and the run folder for one training run."""

    def __init__(
        self,
        config: TrainConfig,
        dist_info: DistInfo | None = None,
        resume: bool = False,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.dist = dist_info or DistInfo()
        self.warn = warn or (lambda msg: None)
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.device = self._device()
        self.amp_dtype = self._amp_dtype()
        self.sampler = PatchSampler(config.data, config.model.scale, config.crop, config.degradation, warn=self.warn)
        self.generator = Generator(config.model).to(self.device)
        self.discriminator: Discriminator | None = None
        self.content: ContentLoss | None = None  # None in the srgan phase = pixel-MSE content (SRGAN-MSE)
        if config.phase == "srgan" or config.init is not None:
            self._load_init()
        if config.phase == "srgan":
            self._setup_srgan()
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=(0.9, 0.999))
        self.opt_d = (
            torch.optim.Adam(self.discriminator.parameters(), lr=self._d_lr, betas=(0.9, 0.999))
            if self.discriminator is not None
            else None
        )
        milestones = list(config.lr_milestones)
        self.sched_g = torch.optim.lr_scheduler.MultiStepLR(self.opt_g, milestones, config.lr_gamma)
        self.sched_d = (
            torch.optim.lr_scheduler.MultiStepLR(self.opt_d, milestones, config.lr_gamma) if self.opt_d else None
        )
        self.step = 0
        self.val_metrics: dict[str, float] = {}
        self.elapsed = 0.0
        self.ema: WeightAverage | None = None
        saved_ema = self._resume() if resume else None
        if config.ema:
            self.ema = WeightAverage(self.generator, config.ema)
            if saved_ema is not None:
                self.ema.load_state_dict(saved_ema)
            elif resume:
                self.warn(f"the checkpoint has no weight average: --ema starts it from the weights of step {self.step}")
        elif saved_ema is not None:
            self.warn("the checkpoint's weight average is dropped: this run saves the trained weights (no --ema)")
        self.g_train: nn.Module = self.generator
        self.d_train: nn.Module | None = self.discriminator
        if self.dist.enabled:
            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.g_train = nn.parallel.DistributedDataParallel(self.generator, device_ids=ids)
            if self.discriminator is not None:
                self.d_train = nn.parallel.DistributedDataParallel(self.discriminator, device_ids=ids)

    @property
    def _d_lr(self) -> float:
        return self.config.lr if self.config.d_lr is None else self.config.d_lr

    def _device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda", self.dist.local_rank)
        return torch.device("cpu")

    def _amp_dtype(self) -> torch.dtype | None:
        if not self.config.amp or self.device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None

    def _load_init(self) -> None:
        """Start from ``--init`` weights (srgan: the bundled model by default), grown if they are smaller."""
        from srgan_deploy.train.widen import widen_generator

        cfg = self.config
        init, info = load_generator(cfg.init)
        if info.config != cfg.model:
            old, new = info.config, cfg.model
            if old.scale != new.scale or old.channels > new.channels or old.blocks > new.blocks:
                raise TrainingError(
                    f"--init weights are {old.channels}x{old.blocks} (x{old.scale}) but the run asks for "
                    f"{new.channels}x{new.blocks} (x{new.scale}); pass matching or larger --channels/--blocks"
                )
            self.warn(
                f"growing --init {info.name} ({old.channels}x{old.blocks}) to {new.channels}x{new.blocks}: "
                "same function at step 0, the new channels and blocks start silent (train/widen.py)"
            )
            init = widen_generator(init, new, seed=cfg.seed)
        self.generator.load_state_dict(init.state_dict())

    def _setup_srgan(self) -> None:
        cfg = self.config
        self.discriminator = Discriminator(dropout=cfg.d_dropout).to(self.device)
        layer = cfg.content_layer
        if layer is not None:
            vgg = load_vgg(cfg.vgg_weights, layer, random_for_tests=cfg.random_vgg_for_tests)
            self.content = ContentLoss(vgg).to(self.device)

    # ----------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "step": self.step,
            "elapsed": self.elapsed,
            "config": self.config.to_dict(),
            "generator": self.generator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "val": self.val_metrics,
        }
        if self.discriminator is not None and self.opt_d is not None and self.sched_d is not None:
            state["discriminator"] = self.discriminator.state_dict()
            state["opt_d"] = self.opt_d.state_dict()
            state["sched_d"] = self.sched_d.state_dict()
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def _resume(self) -> dict[str, Any] | None:
        """Restore the run; the saved weight average, if any, for the caller to adopt."""
        state = load_checkpoint(self.config.out / CHECKPOINT)
        changed = self.config.resume_mismatch(state["config"])
        if changed:
            raise TrainingError(
                f"cannot resume: {', '.join(changed)} differ from the saved run; use a new --out folder"
            )
        self.generator.load_state_dict(state["generator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.sched_g.load_state_dict(state["sched_g"])
        if self.discriminator is not None:
            if "discriminator" not in state:
                raise TrainingError("cannot resume an srgan run from an srresnet checkpoint; use --init instead")
            assert self.opt_d is not None and self.sched_d is not None
            self.discriminator.load_state_dict(state["discriminator"])
            self.opt_d.load_state_dict(state["opt_d"])
            self.sched_d.load_state_dict(state["sched_d"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step = int(state["step"])
        self._apply_schedule()
        self.elapsed = float(state.get("elapsed", 0.0))
        self.val_metrics = dict(state.get("val", {}))
        saved_ema: dict[str, Any] | None = state.get("ema")
        return saved_ema

    def provenance(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "name": cfg.name,
            "placeholder": False,
            "phase": cfg.phase,
            "init": cfg.init,
            "data": str(cfg.data),
            "training_images": len(self.sampler),
            "degradation": cfg.degradation.kind,
            "steps": self.step,
            "batch_size": cfg.batch_size * self.dist.world,
            "crop": cfg.crop,
            "lr": cfg.lr,
            "loss": cfg.loss if cfg.phase == "srresnet" else f"{cfg.content} + {cfg.adv_weight:g} adversarial",
            "content": cfg.content if cfg.phase == "srgan" else None,
            "ema": cfg.ema or None,
            "seed": cfg.seed,
            "train_seconds": round(self.elapsed, 1),
            "hardware": self._hardware(),
            "torch": torch.__version__,
            "validation": {"folder": str(cfg.val) if cfg.val else None, **self.val_metrics},
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def _hardware(self) -> str:
        if self.device.type == "cuda":
            return f"{self.dist.world}x {torch.cuda.get_device_name(self.device)}"
        return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"

    def _apply_schedule(self) -> None:
        """Make a resumed run follow this run's --lr/--lr-milestones/--lr-gamma, not the saved ones.

        Why: the schedule is how a long CPU run is extended (more steps, a later decay); the scheduler's
        saved state would otherwise keep the old milestones silently."""
        from collections import Counter

        cfg = self.config
        done = sum(1 for m in cfg.lr_milestones if m <= self.step)
        for sched, opt, base in ((self.sched_g, self.opt_g, cfg.lr), (self.sched_d, self.opt_d, self._d_lr)):
            if sched is None or opt is None:
                continue
            sched.milestones = Counter(cfg.lr_milestones)  # type: ignore[attr-defined]
            sched.gamma = cfg.lr_gamma  # type: ignore[attr-defined]
            sched.base_lrs = [base for _ in opt.param_groups]
            for group in opt.param_groups:
                group["lr"] = base * cfg.lr_gamma**done
                group["initial_lr"] = base

    def deployed(self) -> Generator:
        """The weights a user gets: the average when ``--ema`` is on, else the trained ones."""
        if self.ema is not None:
            model = self.ema.model
            assert isinstance(model, Generator)
            return model
        return self.generator

    def save(self) -> Path:
        """Checkpoint and deployable weights; rank 0 writes, everyone waits."""
        weights = self.config.out / WEIGHTS
        if self.dist.is_main:
            self.config.out.mkdir(parents=True, exist_ok=True)
            save_checkpoint(self.config.out / CHECKPOINT, self.state())
            save_generator(self.deployed(), weights, self.provenance())
        barrier(self.dist)
        return weights

    def snapshot(self) -> Path:
        """A numbered copy of the deployable weights, so a later, worse step does not replace a better one."""
        path = self.config.out / SNAPSHOTS / f"generator-step-{self.step:07d}.safetensors"
        if self.dist.is_main:
            save_generator(self.deployed(), path, self.provenance())
        barrier(self.dist)
        return path

    # ----------------------------------------------------------------- steps
    def _autocast(self) -> AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def train_step(self) -> dict[str, float]:
        cfg = self.config
        lr_np, hr_np = self.sampler.batch(cfg.seed, self.step, cfg.batch_size, self.dist.rank, self.dist.world)
        lr = torch.from_numpy(lr_np).to(self.device, non_blocking=True)
        hr = torch.from_numpy(hr_np).to(self.device, non_blocking=True)
        self.generator.train()
        losses: dict[str, float] = {}
        if self.discriminator is None:
            with self._autocast():
                sr = self.g_train(lr)
            loss = pixel_loss(sr.float(), hr, cfg.loss)
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            self.opt_g.step()
            self.sched_g.step()
            if self.ema is not None:
                self.ema.update()
            losses[cfg.loss] = float(loss.detach())
            return losses
        assert self.d_train is not None and self.opt_d is not None and self.sched_d is not None
        self.discriminator.train()
        # discriminator: real vs (detached) fake
        with self._autocast():
            sr = self.g_train(lr)
            real_logits = self.d_train(hr).float()
            fake_logits = self.d_train(sr.detach()).float()
            d_loss = discriminator_loss(real_logits, fake_logits)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        # generator: content + adversarial through D (gradient flows into G)
        with self._autocast():
            adv = generator_adversarial_loss(self.d_train(sr).float())
            if self.content is None:  # SRGAN-MSE
                # the paper computes this MSE on HR images scaled to [-1, 1] (4x ours on [0, 1]): with the same
                # 1e-3 adversarial weight, only the same scale keeps the paper's balance of the two terms
                content = PAPER_MSE_SCALE * pixel_loss(sr.float(), hr, "mse")
            else:
                content = self.content(sr.float().clamp(0, 1), hr)
        g_loss = content + cfg.adv_weight * adv
        if cfg.pixel_weight:
            pix = pixel_loss(sr.float(), hr)
            g_loss = g_loss + cfg.pixel_weight * pix
            losses["mse"] = float(pix.detach())
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        self.sched_g.step()
        self.sched_d.step()
        if self.ema is not None:
            self.ema.update()
        losses.update(
            g=float(g_loss.detach()),
            content=float(content.detach()),
            adv=float(adv.detach()),
            d=float(d_loss.detach()),
            # D's accuracy on this batch: how far ahead of G it is (1/1 = G gets no useful gradient)
            d_real_acc=float((real_logits.detach() > 0).float().mean()),
            d_fake_acc=float((fake_logits.detach() < 0).float().mean()),
        )
        return losses

    def validate(self) -> dict[str, float]:
        """PSNR/SSIM of the deployable weights; with ``--ema`` also of the trained ones (``psnr_raw``),
        which is what tells whether the average earns its keep."""
        if self.config.val is None:
            return {}
        psnr, ssim = self._measure(self.deployed())
        self.val_metrics = {"step": self.step, "psnr": round(psnr, 3), "ssim": round(ssim, 4)}
        if self.ema is not None:
            self.val_metrics["psnr_raw"] = round(self._measure(self.generator)[0], 3)
        return self.val_metrics

    def _measure(self, model: nn.Module) -> tuple[float, float]:
        assert self.config.val is not None
        model.eval()

        def upscale(image: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).to(self.device)
            with torch.no_grad():
                y = model(x).clamp(0, 1).mul(255).round()
            return y[0].permute(1, 2, 0).byte().cpu().numpy()

        report = evaluate(self.config.val, upscale, self.config.model.scale, limit=self.config.val_limit)
        mean = report.mean("model")
        return mean.psnr, mean.ssim

    def log(self, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            self.config.out.mkdir(parents=True, exist_ok=True)
            with (self.config.out / LOG).open("a") as fh:
                fh.write(json.dumps(record) + "\n")


def run_training(
    config: TrainConfig,
    resume: bool = False,
    warn: Callable[[str], None] | None = None,
    progress: Callable[[int, int, dict[str, float], float], None] | None = None,
    dist_info: DistInfo | None = None,
) -> TrainResult:
    """Train to ``config.steps``; checkpoint every N steps and on Ctrl-C (then raise ``Interrupted``)."""
    check_folders(config)  # before anything slow: a bad --val must not surface after hours of training
    info = dist_info or init_distributed()
    trainer = Trainer(config, info, resume=resume, warn=warn)
    if info.is_main:
        config.out.mkdir(parents=True, exist_ok=True)
        (config.out / "train_config.json").write_text(config.to_json() + "\n")
    losses: dict[str, float] = {}
    try:
        with sigterm_as_interrupt():  # SIGTERM checkpoints like Ctrl-C
            losses = _train_until_done(trainer, config, info, progress)
    except KeyboardInterrupt:
        trainer.save()
        shutdown(info)
        raise Interrupted(
            f"interrupted at step {trainer.step}; checkpoint saved in {config.out}, continue with --resume"
        ) from None
    weights = trainer.save()
    shutdown(info)
    return TrainResult(trainer.step, losses, trainer.val_metrics, weights, trainer.elapsed)


def check_folders(config: TrainConfig) -> None:
    from srgan_deploy.images import list_images

    if not config.data.is_dir():
        raise InputFileError(f"--data {config.data} is not a folder")
    if config.val is not None:
        if not config.val.is_dir():
            raise InputFileError(f"--val {config.val} is not a folder of images")
        if not list_images(config.val):
            raise InputFileError(f"--val {config.val} holds no images (png/jpg/webp/bmp/tiff)")


def _train_until_done(
    trainer: Trainer,
    config: TrainConfig,
    info: DistInfo,
    progress: Callable[[int, int, dict[str, float], float], None] | None,
) -> dict[str, float]:
    """Steps until ``config.steps``, logging, validating and checkpointing on schedule; the last losses."""
    losses: dict[str, float] = {}
    window_start, window_steps = time.perf_counter(), 0
    while trainer.step < config.steps:
        t0 = time.perf_counter()
        losses = trainer.train_step()
        trainer.step += 1
        trainer.elapsed += time.perf_counter() - t0
        window_steps += 1
        if not all(np.isfinite(v) for v in losses.values()):
            raise TrainingError(f"loss became non-finite at step {trainer.step} ({losses}); lower --lr")
        if trainer.step % config.log_every == 0 or trainer.step == config.steps:
            rate = window_steps / max(time.perf_counter() - window_start, 1e-9)
            window_start, window_steps = time.perf_counter(), 0
            trainer.log({"step": trainer.step, **losses, "lr": trainer.opt_g.param_groups[0]["lr"], "it_s": rate})
            if progress and info.is_main:
                progress(trainer.step, config.steps, losses, rate)
        if config.val is not None and (trainer.step % config.val_every == 0 or trainer.step == config.steps):
            if info.is_main:
                trainer.log({"step": trainer.step, "val": trainer.validate()})
            barrier(info)
        if config.snapshot_every and trainer.step % config.snapshot_every == 0:
            trainer.snapshot()
        if trainer.step % config.checkpoint_every == 0:
            trainer.save()
    return losses
