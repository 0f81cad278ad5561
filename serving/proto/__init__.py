"""Generated protobuf/gRPC code for protos/ (regenerate with ``python -m ganserve.serving.proto.build``).

The messages live in their own descriptor pool, not protobuf's default one, so they can share a process with
other definitions of the same ``inference`` package (tritonclient's, for instance) without a symbol clash.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
