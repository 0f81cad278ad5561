"""Weight layouts of networks trained elsewhere, registered beside the networks they load into (the way a network
is registered): each ``Format`` names the keys every such file has, the grammar all its keys follow, how its
hyper-parameters are read from key names and shapes, how its keys map onto ganserve's network, and which
application hosts it. ``ganserve import`` (pipeline/importer.py) reads a file and asks ``layouts()`` which one it is.

A network family's module registers its layouts with ``register_layout(Format(...))`` after the network itself
(networks/sr_external.py: Real-ESRGAN, ESRGAN, SRVGGNetCompact, MSRResNet, EDSR; networks/translation.py:
pytorch-CycleGAN's ResnetGenerator and UnetGenerator). The helpers below are what the readers share.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from ganserve.core.errors import GanserveError

State = dict[str, torch.Tensor]
NORM_PARAMS = "weight|bias|running_mean|running_var|num_batches_tracked"
_LAYOUTS: dict[str, "Format"] = {}


class ImportFailure(GanserveError):
    """The file cannot be imported: unreadable, unsafe, of an unknown layout, or its weights do not fit."""



@dataclass
class Reading:
    """What a format's reader found in a file: the application and config that host it, and its hyper-parameters."""

    application: str  # registered application whose ``generator`` takes the weights
    config: dict[str, Any]  # config values for that application (the generator spec, the SR scale, ...)
    hyper: dict[str, Any]  # the hyper-parameters read from the keys and shapes (recorded in the card)
    channels: str = "RGB"  # channel order the network was trained on
    notes: list[str] = field(default_factory=list)  # assumptions that the keys cannot tell, and what was done
    drop: tuple[str, ...] = ()  # file keys that carry nothing the network keeps (stale instance-norm statistics)


@dataclass(frozen=True)
class Format:
    """One known layout: how to tell it (``required`` keys present, every key matching ``grammar``), read it and
    map it onto the project's network."""

    name: str  # the --format value
    title: str  # what it is, for messages and the card
    required: tuple[str, ...]  # keys every file of this format has (matched literally)
    grammar: tuple[str, ...]  # regular expressions that every key of such a file matches
    read: Callable[[State], Reading]  # hyper-parameters from key names and shapes (after ``rename``)
    rename: Callable[[State], State] = lambda state: dict(state)  # file keys -> the network's keys
    key_map: str = "identity: the file's keys are the network's"

    def mismatch(self, keys: Iterable[str]) -> tuple[list[str], list[str]]:
        """(required keys the file lacks, file keys outside this format's grammar), each in order."""
        keys = list(keys)
        present = set(keys)
        patterns = [re.compile(f"(?:{g})\\Z") for g in self.grammar]
        missing = [k for k in self.required if k not in present]
        unexpected = [k for k in keys if not any(p.match(k) for p in patterns)]
        return missing, unexpected


def register_layout(fmt: Format) -> Format:
    """Add a layout (its name is the ``--format`` value); a second layout under one name is an error."""
    known = _LAYOUTS.get(fmt.name)
    if known is not None and known != fmt:
        raise GanserveError(f"weight layout {fmt.name!r} registered twice")
    _LAYOUTS[fmt.name] = fmt
    return fmt


def layouts() -> tuple[Format, ...]:
    """Every registered layout, in registration order (auto-detection takes the first that fits)."""
    from ganserve.training.networks.registry import available_networks

    available_networks()  # imports every network family, and with it the layouts registered beside them
    return tuple(_LAYOUTS.values())


# -- what the readers share ------------------------------------------------------------------------------------------
def shape(state: State, key: str, ndim: int) -> tuple[int, ...]:
    """The shape of ``state[key]``, which must exist and have ``ndim`` axes."""
    if key not in state:
        raise ImportFailure(f"no {key} in the file")
    shape = tuple(state[key].shape)
    if len(shape) != ndim:
        raise ImportFailure(f"{key} has shape {list(shape)}, not a {ndim}-d tensor")
    return shape


def indices(state: State, prefix: str = "body") -> list[int]:
    """Sorted block numbers N of the ``prefix.N.`` keys; a gap in the numbering is an error."""
    regex = re.compile(rf"{re.escape(prefix)}\.(\d+)\.")
    found = sorted({int(m.group(1)) for k in state if (m := regex.match(k))})
    if found and found != list(range(found[-1] + 1)):
        gap = next(i for i in range(found[-1] + 1) if i not in found)
        raise ImportFailure(f"{prefix}.N is numbered 0..{found[-1]} with {prefix}.{gap} missing")
    return found


def three_channels(what: str, in_ch: int, out_ch: int) -> None:
    """ganserve serves RGB in and RGB out."""
    if (in_ch, out_ch) != (3, 3):
        raise ImportFailure(f"{what} takes {in_ch} and returns {out_ch} channels; ganserve serves RGB in and out "
                            "(3, 3)")


def sr_reading(network: str, scale: int, spec: dict[str, Any], notes: list[str] | None = None) -> Reading:
    """An SR network's reading: the srresnet application hosts it as its generator at ``scale``."""
    hyper = {"scale": scale, **spec}
    generator = {"type": network, "num_in_ch": 3, "num_out_ch": 3, **spec}
    return Reading("srresnet", {"scale": scale, "generator": generator}, hyper, notes=notes or [])
