"""ganserve: train GAN image models, export them to verified ONNX, serve them over gRPC.

This package holds what every stage shares without importing torch: the command line, the
model-repository contract and the user-facing error type.
"""

__version__ = "0.1.0"
