"""The model card's memory cost: working memory of one run per (provider, precision), measured at export.

Each provider the export machine has gets a fresh session of each exported file (the model and its int8/fp16
variants) and the fit of
ganserve.core.memory_cost (two probe sizes, peak RSS growth, times a safety factor); the server uses the figure for
the provider and precision it chooses, and measures at load what the card lacks (bf16 inference of the fp32 file,
another machine's provider) and keeps that in its choice cache.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from ganserve.core.export_spec import ExportSpec
from ganserve.core.memory_cost import card_key, measure_cost, probe_sides
from ganserve.core.onnxruntime_facts import typical_feeds
from ganserve.export.predictors import raw_session
from ganserve.export.providers import MEASURE_ORDER


def measure_memory(spec: ExportSpec, models: dict[str, onnx.ModelProto]) -> dict[str, dict[str, object]]:
    """{"Provider/precision": cost model as the card stores it} for each provider here and each exported file
    (`models`: precision -> model); empty for a model whose image input has no free height and width (its memory
    does not grow with the request)."""
    image = next((t for t in spec.inputs if t.role == "image"), None)
    if image is None or not spec.dynamic_spatial:
        return {}
    found: dict[str, dict[str, object]] = {}
    for precision, model in models.items():
        data = model.SerializeToString()
        for provider in MEASURE_ORDER:
            if provider in ort.get_available_providers():
                cost = _measured(spec, data, provider)
                if cost is not None:
                    found[card_key(provider, precision)] = cost
    return found


def _measured(spec: ExportSpec, data: bytes, provider: str) -> dict[str, object] | None:
    """One file's cost on one provider, or None where the provider cannot run it at the probe sizes."""
    try:
        session = raw_session(data, provider)
    except Exception:  # noqa: BLE001  (a provider that cannot run this graph has no figure to give)
        return None
    names = [o.name for o in session.get_outputs()]

    def run(feeds: dict[str, np.ndarray]) -> object:
        return session.run(names, feeds)

    try:
        run(typical_feeds(session.get_inputs(), max(16, spec.spatial_multiple)))  # compile outside the measurement
        cost = measure_cost(run, lambda side: typical_feeds(session.get_inputs(), side), spec.scale,
                            probe_sides(spec.spatial_multiple))
    except Exception:  # noqa: BLE001  (a graph that cannot run the probe sizes gets no figure: measured at load)
        return None
    return cost.to_dict() if cost.source.startswith("measured") else None
