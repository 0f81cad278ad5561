"""Training stage (PyTorch): the generic GAN trainer, applications, networks by name, data sources, objectives."""
