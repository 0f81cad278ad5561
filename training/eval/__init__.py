"""Evaluation shared by the generative models: sample-quality metrics computed the same way for every model."""
