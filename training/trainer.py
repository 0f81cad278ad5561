"""The generic trainer: drives any registered Application step by step, with checkpoints, resume, logs and DDP.

Data parallelism: started under ``torchrun``, every rank builds the same model from the same seed, draws its own
batch (seeded by (seed, step, rank)), and gradients are averaged across ranks before each optimizer step, which is
what DistributedDataParallel does; batch-norm statistics are broadcast from rank 0 after each step. Rank 0 alone
writes the checkpoint, metrics, samples and evaluation. The batch size is per rank.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from ganserve.core.errors import CheckpointError, GanserveError, first_line
from ganserve.core.machine import describe as describe_cpu
from ganserve.training import registry
from ganserve.training.application import Application, TrainContext, broadcast_state
from ganserve.training.checkpoint import git_commit, load_checkpoint, save_checkpoint
from ganserve.training.config import config_dict, load_config_file
from ganserve.training.registry import merge_config
from ganserve.training.runlog import MetricsLog, setup_logging, write_json, write_png
from ganserve.training.schedule import lr_factor

log = logging.getLogger("ganserve.training")

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
EVAL_NAME = "eval.json"
SAMPLES_DIR = "samples"


def init_distributed(device: str) -> tuple[int, int, bool]:
    """(rank, world size, whether this call started the process group) from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    started = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
        started = True
    return dist.get_rank(), dist.get_world_size(), started


AUTOCAST_MODES = ("off", "bf16", "auto")


def autocast_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The dtype the training steps autocast to (None = fp32) for config ``autocast`` on ``device``."""
    from ganserve.core.machine import cpu_info

    if mode not in AUTOCAST_MODES:
        raise GanserveError(f"autocast must be one of {', '.join(AUTOCAST_MODES)}, got {mode!r}")
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" or cpu_info()["bf16_hardware"] else "off"
    return torch.bfloat16 if mode == "bf16" else None


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise GanserveError("device=cuda but no CUDA device is available")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise GanserveError(f"device must be cpu, cuda or auto, got {name!r}")
    return torch.device("cpu")


class Trainer:
    """One training run of one application into ``out_dir``; ``run()`` returns the checkpoint path."""

    def __init__(
        self,
        model_name: str,
        config_overrides: dict[str, Any] | None = None,
        *,
        steps: int | None = None,
        budget_minutes: float | None = None,
        out_dir: str | Path | None = None,
        resume: bool = False,
        config_file: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        if steps is None and budget_minutes is None:
            raise GanserveError("say how long to train: --steps N and/or --budget-minutes M")
        if steps is not None and steps < 0:
            raise GanserveError(f"--steps must be >= 0, got {steps}")
        if budget_minutes is not None and budget_minutes <= 0:
            raise GanserveError(f"--budget-minutes must be > 0, got {budget_minutes}")
        registry.lookup(model_name)  # an unknown name fails here, before a resume checkpoint is read
        self.model_name = model_name
        self.steps = steps
        self.budget_s = None if budget_minutes is None else budget_minutes * 60.0
        self.budget_minutes = budget_minutes
        self.out = Path(out_dir or Path("runs") / model_name)
        self.ckpt_path = self.out / CHECKPOINT_NAME

        payload = self._resume_payload(model_name) if resume else None
        self.config = merge_config(model_name, payload["config"] if payload else None,
                                   load_config_file(config_file) if config_file else None, config_overrides)

        self.rank, self.world, self._started_pg = init_distributed(self.config.device)
        self.is_main = self.rank == 0
        setup_logging(self.is_main)
        self.progress = progress and self.is_main
        self.device = _device(self.config.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.metrics_log = MetricsLog(self.out / METRICS_NAME) if self.is_main else None
        self.autocast = autocast_dtype(self.config.autocast, self.device)

        torch.manual_seed(self.config.seed)
        self.app: Application = registry.build(model_name, self.config).to(self.device)
        self.app.train()
        context = TrainContext(
            rank=self.rank, world_size=self.world, device=self.device, note=self._note, resuming=payload is not None
        )
        self.step = 0
        self.app.setup_training(context)
        self.elapsed_before = 0.0
        self.last_eval: dict[str, float] = {}
        self.last_losses: dict[str, float] = {}
        if payload is not None:
            self._restore(payload)
        if self.world > 1:
            broadcast_state(self.app)
        self.commit = git_commit()

    # -- setup helpers ---------------------------------------------------------------------------------------
    def _resume_payload(self, model_name: str) -> dict[str, Any]:
        if not self.ckpt_path.exists():
            raise CheckpointError(f"--resume: no checkpoint at {self.ckpt_path}")
        payload = load_checkpoint(self.ckpt_path)
        if payload["model"] != model_name:
            raise CheckpointError(f"--resume: {self.ckpt_path} holds model {payload['model']!r}, not {model_name!r}")
        return payload

    def _restore(self, payload: dict[str, Any]) -> None:
        try:
            self.app.load_state_dict(payload["state"], strict=True)
            for name, opt in self.app.optimizers().items():
                if name in payload["optim"]:
                    opt.load_state_dict(payload["optim"][name])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"--resume: {self.ckpt_path} does not fit this config ({first_line(exc)})") from exc
        self.step = int(payload["step"])
        metrics = payload.get("metrics", {})
        self.elapsed_before = float(metrics.get("elapsed_seconds", 0.0))
        self.last_eval = dict(metrics.get("eval", {}))
        self._note(f"resumed from {self.ckpt_path} at step {self.step}")

    def _note(self, message: str) -> None:
        """A line for the log and the metrics file (rank 0)."""
        if self.is_main:
            log.info(message)
            assert self.metrics_log is not None
            self.metrics_log.write({"kind": "note", "step": self.step, "message": message})

    # -- periodic outputs -----------------------------------------------------------------------------------
    def _due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0

    def _set_lr(self, elapsed: float) -> float:
        c = self.config
        if self.steps:
            progress = self.step / self.steps
        elif self.budget_s:
            progress = elapsed / self.budget_s
        else:
            progress = 0.0
        factor = lr_factor(c.lr_schedule, progress, self.step, c.warmup_steps, c.lr_min_factor)
        first = None
        for opt in self.app.optimizers().values():
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * factor
                first = group["lr"] if first is None else first
        return float(first or 0.0)

    def _metrics(self, elapsed: float, interrupted: bool = False) -> dict[str, Any]:
        return {
            "losses": self.last_losses,
            "eval": self.last_eval,
            "elapsed_seconds": round(elapsed, 2),
            "budget_minutes": self.budget_minutes,
            "steps_target": self.steps,
            "world_size": self.world,
            "seed": self.config.seed,
            "cpu": describe_cpu(),
            "interrupted": interrupted,
            "autocast": "bf16" if self.autocast is torch.bfloat16 else "off",
            **self.app.facts,
        }

    def save(self, elapsed: float, interrupted: bool = False) -> Path:
        """Write the checkpoint (rank 0): config, weights, optimizer state, step, metrics, commit."""
        payload = {
            "model": self.model_name,
            "config": config_dict(self.config),
            "state": {k: v.detach().cpu() for k, v in self.app.state_dict().items()},
            "optim": {name: opt.state_dict() for name, opt in self.app.optimizers().items()},
            "step": self.step,
            "metrics": self._metrics(elapsed, interrupted),
            "commit": self.commit,
        }
        return save_checkpoint(self.ckpt_path, payload)

    def _evaluate(self) -> None:
        self.last_eval = self.app.evaluate()
        assert self.metrics_log is not None
        self.metrics_log.write({"kind": "eval", "step": self.step, **self.last_eval})
        headline = ", ".join(f"{k}={v:.4g}" for k, v in list(self.last_eval.items())[:6] if isinstance(v, (int, float)))
        log.info("eval at step %d: %s", self.step, headline)

    def _sample(self) -> None:
        write_png(self.out / SAMPLES_DIR / f"step_{self.step:06d}.png", self.app.sample_grid())

    def _should_stop(self, elapsed: float) -> bool:
        stop = (self.steps is not None and self.step >= self.steps) or (
            self.budget_s is not None and elapsed >= self.budget_s
        )
        if self.world > 1 and self.budget_s is not None:
            flag = torch.tensor([1 if stop else 0])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # time differs per rank; stop together
            stop = bool(flag.item())
        return stop

    # -- the loop --------------------------------------------------------------------------------------------
    def run(self) -> Path:
        """Train until the step count or time budget. Ctrl-C or SIGTERM finishes the current step, saves a
        checkpoint and raises KeyboardInterrupt; a second Ctrl-C stops at once (the last checkpoint stays).
        Returns the checkpoint path."""
        self._signalled = False
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            return self._run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._signalled:
            raise KeyboardInterrupt
        self._signalled = True
        if self.is_main:
            log.info("stop requested (%s): saving after this step", signal.Signals(signum).name)

    def _run(self) -> Path:
        c = self.config
        run_start = time.monotonic()

        def elapsed() -> float:
            return self.elapsed_before + time.monotonic() - run_start

        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._note(
                f"{self.model_name}: {sum(p.numel() for p in self.app.parameters()):,} parameters, "
                f"world size {self.world}, step {self.step}, target steps={self.steps} budget_min={self.budget_minutes}"
            )
        bar = tqdm(total=self.steps, initial=self.step, disable=not self.progress, dynamic_ncols=True, unit="step")
        window_time, window_steps = 0.0, 0  # time spent in training steps only, for throughput
        evaluated_at = sampled_at = -1
        try:
            # the budget and the schedule count the whole training, as --steps does: a resumed run finishes the
            # budget it was given instead of starting it again (elapsed() includes the time before the resume)
            while not self._should_stop(elapsed()):
                if self._signalled:
                    if self.is_main:
                        path = self.save(elapsed(), interrupted=True)
                        log.info("stopped at step %d; checkpoint saved to %s (continue with --resume)", self.step, path)
                    raise KeyboardInterrupt
                t0 = time.monotonic()
                lr = self._set_lr(elapsed())
                batch = self.app.make_batch(self.step, self.rank, self.world)
                with torch.autocast(self.device.type, dtype=self.autocast or torch.float32,
                                    enabled=self.autocast is not None):
                    losses = self.app.train_step(batch, self.step)
                if self.world > 1:
                    broadcast_state(self.app, buffers_only=True)
                self.step += 1
                window_time += time.monotonic() - t0
                window_steps += 1
                self.last_losses = losses
                bar.update(1)
                if not self.is_main:
                    continue
                if self._due(c.log_every):
                    rate = window_steps / max(window_time, 1e-9)
                    window_time, window_steps = 0.0, 0
                    imgs = rate * c.batch_size * self.world
                    bar.set_postfix({**{k: f"{v:.4g}" for k, v in losses.items()}, "img/s": f"{imgs:.1f}"}, refresh=False)
                    assert self.metrics_log is not None
                    self.metrics_log.write(
                        {"kind": "train", "step": self.step, **losses, "lr": lr, "steps_per_s": rate,
                         "imgs_per_s": imgs, "elapsed_s": elapsed()}
                    )
                if self._due(c.eval_every):
                    self._evaluate()
                    evaluated_at = self.step
                if self._due(c.sample_every):
                    self._sample()
                    sampled_at = self.step
                if self._due(c.ckpt_every):
                    self.save(elapsed())
        except KeyboardInterrupt:
            bar.close()
            self._finish(barrier=False)
            raise
        bar.close()
        if self.is_main:
            if evaluated_at != self.step:
                self._evaluate()
            if sampled_at != self.step:
                self._sample()
            self.save(elapsed())  # always: the final metrics include the final evaluation
            write_json(
                self.out / EVAL_NAME,
                {"model": self.model_name, "step": self.step, "elapsed_seconds": round(elapsed(), 2),
                 **self.last_eval, **{k: v for k, v in self.app.facts.items() if isinstance(v, str)}},
            )
            log.info("done: step %d in %.1f s; checkpoint %s", self.step, elapsed(), self.ckpt_path)
        self._finish()
        return self.ckpt_path

    def _finish(self, barrier: bool = True) -> None:
        if self.world > 1 and barrier:
            dist.barrier()
        if self._started_pg and dist.is_initialized():
            dist.destroy_process_group()
            self._started_pg = False


def train(
    model_name: str,
    config_overrides: dict[str, Any] | None = None,
    *,
    steps: int | None = None,
    budget_minutes: float | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    config_file: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Train ``model_name`` (registry name) and return the path of its checkpoint (``<out_dir>/checkpoint.pt``)."""
    trainer = Trainer(
        model_name,
        config_overrides,
        steps=steps,
        budget_minutes=budget_minutes,
        out_dir=out_dir,
        resume=resume,
        config_file=config_file,
        progress=progress,
    )
    return trainer.run()
