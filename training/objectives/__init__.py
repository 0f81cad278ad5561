"""Training objectives: adversarial losses by name, Lipschitz tools and latent-variable terms shared by applications,
and one module per application family for its own losses (content, derain, face_aging, ssgan)."""

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
