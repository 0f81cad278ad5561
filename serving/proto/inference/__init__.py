"""Generated protobuf package (see serving/proto/build.py)."""
