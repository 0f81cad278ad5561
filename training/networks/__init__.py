"""Networks by name, apart from the applications that train them: ``{"type": name, **arguments}`` in a config
builds one. Families: ``sr`` (SRResNet, SRGAN discriminator), ``sr_external`` (RRDBNet, SRVGGNetCompact,
MSRResNet, EDSR with the published key layouts), ``translation`` (U-Net, ResNet generator, PatchGAN),
``derain`` (attentive GAN), ``face_aging`` (age generator, projection discriminator, face networks), ``ssgan``
(weight-norm classifiers and generator), ``dcgan`` (digits conv encoder/decoder, MLP), ``vgg`` (VGG19 features)."""

from ganserve.training.networks.registry import (
    available_networks,
    build_network,
    describe_network,
    lookup_network,
    register_network,
)

__all__ = ["available_networks", "build_network", "describe_network", "lookup_network", "register_network"]
