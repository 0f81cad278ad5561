"""Which onnxruntime provider measures a faster precision at export: the first installed one that can run it.

Order: CPU first (it is in every flavour and is the provider the fp32 parity and held-out metrics are measured on,
so a variant measured there differs from fp32 by its precision alone), then OpenVINO (the openvino flavour's CPU
provider cannot run every static-QDQ int8 graph, e.g. a quantized Resize; OpenVINO can). OpenVINO always gets the
explicit fp32 inference hint, so what it measures is the file's precision, not bf16 chosen by the hardware.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import onnx
import onnxruntime as ort

from ganserve.core.errors import GanserveError, first_line
from ganserve.core.onnxruntime_facts import CPU, OPENVINO, PROVIDER_NAMES, short
from ganserve.export.predictors import ort_predictor, raw_session
from ganserve.core.export_spec import Predictor

MEASURE_ORDER = (CPU, OPENVINO)
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")


def resolve_providers(names: Sequence[str] | None) -> tuple[str, ...]:
    """Providers to try, in order: the given names (cpu, openvino, cuda or their ORT names), else MEASURE_ORDER."""
    if not names:
        return MEASURE_ORDER
    out = []
    for name in names:
        full = PROVIDER_NAMES.get(name.strip().lower(), name.strip())
        if full not in PROVIDER_NAMES.values():
            raise GanserveError(f"unknown provider {name!r}; use {', '.join(PROVIDER_NAMES)}")
        out.append(full)
    return tuple(dict.fromkeys(out))


def _hint(tried: Sequence[str]) -> str:
    """What would run it: an installed provider left out of --providers, and the flavour that adds a provider."""
    installed = ort.get_available_providers()
    hints = [f"let --providers include {short(p).lower()} (installed)"
             for p in MEASURE_ORDER if p in installed and p not in tried]
    if OPENVINO not in installed:
        hints.append("install the openvino flavour: make setup ORT=openvino")
    elif not hints:
        hints.append("install the cpu flavour (plain onnxruntime): make setup ORT=cpu")
    return ", or ".join(hints)


def _first_line(exc: BaseException) -> str:
    """An ORT exception's first line without ORT's "[ONNXRuntimeError] : N : KIND : " prefix."""
    return _ORT_PREFIX.sub("", first_line(exc, 1000))[:400]


@dataclass
class Measured:
    """A precision's graph measured on one provider: the provider, its predictor and what `measure` returned."""

    provider: str
    predictor: Predictor
    result: Any


def measure_on_first_runnable(
    model: onnx.ModelProto, what: str, providers: Sequence[str], measure: Callable[[Predictor], Any],
) -> Measured:
    """Run `measure` on a session of each provider in turn; the first that builds and runs it measures it.

    A GanserveError from `measure` (a failed check, NaN in the output) is the graph's fault and propagates; any
    other error means this provider cannot run the graph, and the next one is tried."""
    installed = set(ort.get_available_providers())
    data = model.SerializeToString()
    reasons = []
    for provider in providers:
        if provider not in installed:
            reasons.append(f"{short(provider)}: not in this onnxruntime build")
            continue
        try:
            predictor = ort_predictor(raw_session(data, provider))
            return Measured(provider, predictor, measure(predictor))
        except GanserveError:
            raise
        except Exception as exc:  # ORT raises its own types when a provider cannot build or run a graph
            reasons.append(f"{short(provider)}: {_first_line(exc)}")
    raise GanserveError(f"{what}: no installed ONNX Runtime provider can run it ({'; '.join(reasons)}); "
                        f"{_hint(providers)}")
