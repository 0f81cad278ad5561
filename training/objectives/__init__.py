"""Training objectives shared by applications: adversarial losses by name."""

from training.objectives.adversarial import Objective, get_objective, objectives, register_objective

__all__ = ["Objective", "get_objective", "objectives", "register_objective"]
