"""Training objectives shared by applications: adversarial losses by name, Lipschitz tools, latent-variable terms."""

from ganserve.training.objectives.adversarial import (
    Objective,
    Recipe,
    clip_weights,
    get_objective,
    gradient_penalty,
    objectives,
    register_objective,
)

__all__ = [
    "Objective", "Recipe", "clip_weights", "get_objective", "gradient_penalty", "objectives", "register_objective",
]
