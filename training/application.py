"""The base class the trainer drives: an application owns its networks, optimizers, data, losses and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ganserve.training.config import config_dict
from ganserve.core.export_spec import ExportSpec


@dataclass
class DemoExample:
    """One held-out request the main job (`ganserve demo`) sends to the served model, with the answer where known."""

    name: str  # short file-name-safe label, e.g. "flower" or "id3_to_60+"
    image: np.ndarray | None = None  # HxWx3 (or HxW grey) uint8 request image (None for generation)
    truth: np.ndarray | None = None  # HxWx3 (or HxW) uint8 true output where known (SR: the HR crop; derain: the clean image)
    condition: str = ""  # target age group (AgeFace) or class label (Generate)
    label: str = ""  # the true class (Classify)
    seed: int = 0  # latent seed (Generate)


@dataclass
class TrainContext:
    """What the trainer tells an application before training: where it runs and how to report notes."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    resuming: bool = False  # weights will come from the run's own checkpoint (skip init_from)
    note: Callable[[str], None] = print  # a line for the log and the metrics file (rank 0 only writes it)


class Application(nn.Module):
    """Networks as submodules (their weights are the checkpoint's ``state``), plus the verbs the trainer calls.

    Subclasses are registered with ``@register_model(name, ConfigDataclass)`` and implement ``build_optimizers``,
    ``setup_training``, ``make_batch``, ``train_step``, ``evaluate``, ``sample_grid`` and ``export_spec``.
    """

    model_name: str = ""
    config_cls: type = object
    # submodules only training uses (discriminators): a shipped checkpoint leaves their weights out
    training_only: tuple[str, ...] = ()

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.context = TrainContext()
        self.train_info: dict[str, Any] = {}  # step/metrics/commit of the checkpoint this was loaded from
        self.facts: dict[str, Any] = {}  # data and loss facts recorded in checkpoint metrics and the model card
        self._optimizers: dict[str, torch.optim.Optimizer] | None = None

    @property
    def device(self) -> torch.device:
        """Where the networks live (the trainer moves the whole application)."""
        return next(self.parameters()).device

    def inference_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` without the weights of the ``training_only`` submodules."""
        return {k: v for k, v in state.items() if k.split(".", 1)[0] not in self.training_only}

    def load_weights(self, state: dict[str, Any], removed: list[str] | tuple[str, ...] = ()) -> None:
        """Load a checkpoint's weights strictly, except that the submodules named in ``removed`` (training-only
        ones a shipped checkpoint left out) may be absent; they keep their initial weights and serve nothing."""
        if not removed:
            self.load_state_dict(state, strict=True)
            return
        unknown = sorted(set(removed) - set(self.training_only))
        if unknown:
            raise RuntimeError(f"the checkpoint left out {unknown}, which {self.model_name} needs for inference")
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if k.split(".", 1)[0] not in removed]
        if missing or unexpected:
            raise RuntimeError(f"Error(s) in loading state_dict: missing keys {missing[:5]}, unexpected keys "
                               f"{unexpected[:5]}")

    # -- optimisation -------------------------------------------------------------------------------------
    def adam(self, params: Any, lr: float) -> torch.optim.Adam:
        """Adam over a module's (or a list of) parameters with the config's betas."""
        params = params.parameters() if isinstance(params, nn.Module) else params
        return torch.optim.Adam(params, lr=lr, betas=(self.config.beta1, self.config.beta2))

    def gan_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Adam for ``self.generator`` at ``config.lr`` ("g") and ``self.discriminator`` at ``config.d_lr`` ("d")."""
        return {"g": self.adam(self.generator, self.config.lr), "d": self.adam(self.discriminator, self.config.d_lr)}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Create the optimizers by name (e.g. {"g": Adam, "d": Adam}); called once, lazily."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers by name; each param group's ``initial_lr`` is the base of the LR schedule."""
        if self._optimizers is None:
            self._optimizers = self.build_optimizers()
            for opt in self._optimizers.values():
                for group in opt.param_groups:
                    group.setdefault("initial_lr", group["lr"])
        return self._optimizers

    def optimize(self, name: str, loss: torch.Tensor) -> None:
        """One update of optimizer ``name``: backward, average gradients across ranks (data parallel), step."""
        opt = self.optimizers()[name]
        opt.zero_grad(set_to_none=True)
        with torch.autocast(loss.device.type, enabled=False):  # autocast covers forward passes only
            loss.backward()
        if self.context.world_size > 1:
            _all_reduce_mean([p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None])
        opt.step()

    # -- the verbs the trainer drives ---------------------------------------------------------------------
    def setup_training(self, context: TrainContext) -> None:
        """Load data and training-only parts (loss networks, init weights); not needed for inference."""
        self.context = context

    def make_batch(self, step: int, rank: int, world_size: int) -> Any:
        """The batch for ``step`` on ``rank``: a pure function of (seed, step, rank) so resume is exact."""
        raise NotImplementedError

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        """One training step (alternating D/G updates for GANs); returns the losses as floats."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Held-out quality figures (higher is better for the headline one)."""
        raise NotImplementedError

    def evaluate_eval_set(self) -> dict[str, float] | None:
        """The same figures on the evaluation set beside the headline photos (images.BUILTIN_EVAL_SET), where the
        application has one; None otherwise."""
        return None

    def sample_grid(self) -> np.ndarray:
        """A HxWx3 uint8 picture of current outputs on fixed inputs, for the samples/ folder."""
        raise NotImplementedError

    def export_spec(self) -> ExportSpec:
        """Everything the exporter needs: inference module, named tensors, parity/eval/calibration hooks."""
        raise NotImplementedError

    def run_metrics(self) -> dict[str, Any]:
        """The metrics the loaded checkpoint recorded (empty for a fresh model)."""
        return (self.train_info or {}).get("metrics", {}) or {}

    def card_facts(self, value_range: str, training_data: Any, **extra: Any) -> dict[str, Any]:
        """The training facts every model card records (steps, time, config, commit), plus the application's own."""
        info, metrics = self.train_info or {}, self.run_metrics()
        return {
            "model": self.model_name, "value_range": value_range, "training_data": metrics.get("data", training_data),
            **extra,
            "steps": info.get("step"), "elapsed_seconds": metrics.get("elapsed_seconds"),
            "budget_minutes": metrics.get("budget_minutes"), "config": config_dict(self.config),
            "commit": info.get("commit"),
        }

    def demo_examples(self, count: int) -> list[DemoExample]:
        """Up to ``count`` held-out requests for the main job, never seen in training (deterministic)."""
        raise NotImplementedError


@torch.no_grad()
def update_average(average: nn.Module, live: nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * live, parameter by parameter (Polyak / EMA weight averaging)."""
    for avg, param in zip(average.parameters(), live.parameters()):
        avg.lerp_(param, 1.0 - decay)


def _all_reduce_mean(tensors: list[torch.Tensor]) -> None:
    """Average tensors across ranks in one flat all-reduce (what DistributedDataParallel does to gradients)."""
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t))
        offset += n


def broadcast_state(module: nn.Module, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters and/or buffers (batch-norm statistics) to every rank, one flat message per dtype."""
    tensors = list(module.buffers())
    if not buffers_only:
        tensors = [p.data for p in module.parameters()] + tensors
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.broadcast(flat, src=0)
        offset = 0
        for t in group:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()
