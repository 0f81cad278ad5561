"""The ganserve gRPC inference server (onnxruntime; never imports torch, training or export)."""

from importlib import metadata

try:
    __version__ = metadata.version("ganserve")
except metadata.PackageNotFoundError:
    __version__ = "0.0.0"
