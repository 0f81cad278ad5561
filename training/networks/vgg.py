"""VGG19's convolutional part (Simonyan & Zisserman 2015), laid out so torchvision-format weights load by key.

Keys are ``features.N.weight`` / ``features.N.bias`` with N the index in the layer list (conv, ReLU, max-pool).
No weights ship with ganserve: the user names a file; ``load_vgg19_features`` reads it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ganserve.core.errors import GanserveError

# Channels per conv layer, "M" = 2x2 max-pool (configuration "E" of the paper).
VGG19_LAYERS: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)
# Named feature maps -> index of the ReLU after that conv ("5_4" = after the 4th conv of block 5, SRGAN's phi_5,4).
VGG19_RELU_INDEX = {"1_2": 3, "2_2": 8, "3_4": 17, "4_4": 26, "5_4": 35}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """The ``features`` stack of VGG19 up to and including layer ``last``; input RGB in [0, 1]."""

    def __init__(self, last: int = VGG19_RELU_INDEX["5_4"]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for spec in VGG19_LAYERS:
            if spec == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, int(spec), 3, padding=1), nn.ReLU(inplace=True)]
                in_ch = int(spec)
        self.features = nn.Sequential(*layers[: last + 1])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - self.mean) / self.std)


def load_vgg19_features(path: str | Path, layer: str = "5_4") -> VGG19Features:
    """VGG19 features up to ``layer`` with weights from a torchvision-format state dict; frozen, eval mode."""
    if layer not in VGG19_RELU_INDEX:
        raise GanserveError(f"unknown VGG19 layer {layer!r}; one of {', '.join(VGG19_RELU_INDEX)}")
    path = Path(path)
    if not path.is_file():
        raise GanserveError(f"VGG19 weights {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise GanserveError(f"VGG19 weights {path}: unreadable ({type(exc).__name__})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise GanserveError(f"VGG19 weights {path}: not a state dict")
    net = VGG19Features(VGG19_RELU_INDEX[layer])
    wanted = net.features.state_dict()
    picked = {k: state.get(f"features.{k}") for k in wanted}
    missing = [f"features.{k}" for k, v in picked.items() if v is None]
    if missing:
        raise GanserveError(f"VGG19 weights {path}: missing {', '.join(missing[:3])} (want torchvision's vgg19 keys)")
    bad = [f"features.{k}" for k, v in picked.items() if tuple(v.shape) != tuple(wanted[k].shape)]
    if bad:
        raise GanserveError(f"VGG19 weights {path}: wrong shape for {', '.join(bad[:3])}")
    net.features.load_state_dict(picked)
    net.eval().requires_grad_(False)
    return net
