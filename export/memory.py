"""The model card's memory cost: working memory of one run per (provider, fp32), measured at export.

Each provider the export machine has gets a fresh session of the exported model and the fit of
ganserve.core.memory_cost (two probe sizes, peak RSS growth, times a safety factor); the server uses the figure for
the provider and precision it chooses, and measures at load what the card lacks (another precision, another
machine's provider).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from ganserve.core.export_spec import ExportSpec
from ganserve.core.memory_cost import card_key, measure_cost, probe_sides
from ganserve.export.predictors import raw_session
from ganserve.export.providers import MEASURE_ORDER

_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
          "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def _feeds(session: ort.InferenceSession, side: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch-1 input with every free axis but the batch at `side`, uniform in [0, 1) (for floats)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for meta in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else (1 if i == 0 else side) for i, d in enumerate(meta.shape)]
        dtype = _TYPES.get(meta.type, np.float32)
        feeds[meta.name] = rng.random(shape).astype(dtype) if np.dtype(dtype).kind == "f" else np.zeros(shape, dtype)
    return feeds


def measure_memory(spec: ExportSpec, model: onnx.ModelProto) -> dict[str, dict[str, object]]:
    """{"Provider/fp32": cost model as the card stores it} for each provider here; empty for a model whose image
    input has no free height and width (its memory does not grow with the request)."""
    image = next((t for t in spec.inputs if t.role == "image"), None)
    if image is None or not spec.dynamic_spatial:
        return {}
    data = model.SerializeToString()
    found: dict[str, dict[str, object]] = {}
    for provider in MEASURE_ORDER:
        if provider not in ort.get_available_providers():
            continue
        try:
            session = raw_session(data, provider)
        except Exception:  # noqa: BLE001  (a provider that cannot run this graph has no figure to give)
            continue
        names = [o.name for o in session.get_outputs()]

        def run(feeds: dict[str, np.ndarray], session: ort.InferenceSession = session) -> object:
            return session.run(names, feeds)

        try:
            run(_feeds(session, max(16, spec.spatial_multiple)))  # compile/initialise outside the measurement
        except Exception:  # noqa: BLE001
            continue
        try:
            cost = measure_cost(run, lambda side, s=session: _feeds(s, side), spec.scale,
                                probe_sides(spec.spatial_multiple))
        except Exception:  # noqa: BLE001  (a graph that cannot run the probe sizes gets no figure: measured at load)
            continue
        if cost.source.startswith("measured"):
            found[card_key(provider, "fp32")] = cost.to_dict()
    return found
