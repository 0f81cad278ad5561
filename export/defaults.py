"""Export settings shared by the CLI and the stages; torch-free so `ganserve export --help` starts fast."""

DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 13, 21  # the TorchScript exporter's range that onnxruntime 1.x loads
FP32_TOLERANCE = 1e-4  # max abs error vs torch an fp32 export must meet, or nothing is written
