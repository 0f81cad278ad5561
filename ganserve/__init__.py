"""ganserve: train GAN image models, export them to verified ONNX, serve them over gRPC.

The one import name of the project. Its layers are sub-packages, bottom to top: ``ganserve.core`` (the torch-free
contract, errors and machine facts), ``ganserve.training``, ``ganserve.export``, ``ganserve.serving``,
``ganserve.benchmarks`` and ``ganserve.pipeline`` (ship, demo, the CLI); ``ganserve.core.layers`` says what each
may import. Importing ``ganserve`` itself loads nothing else.
"""

__version__ = "0.1.0"
