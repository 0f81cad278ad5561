"""The numeric precisions ganserve knows: one definition for the model card, the export stage and the server."""

from __future__ import annotations

# Every precision a model card or the server names, in the order the server tries them at load.
PRECISIONS = ("fp32", "bf16", "int8", "fp16")
# Those the export stage writes as model files (bf16 is the fp32 file run with OpenVINO's bf16 hint), in the order
# `export --precision` lists them and export/bench_precisions numbers its versions.
EXPORT_PRECISIONS = ("fp32", "fp16", "int8")
# The faster variants the export writes beside an fp32 model.onnx (model.<precision>.onnx).
VARIANT_PRECISIONS = ("int8", "fp16")
