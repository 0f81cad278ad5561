"""Training stage (PyTorch): the generic GAN trainer, data sources, objectives and application models."""
