"""LitServe as a peer server: its own venv (.venv-peers/litserve, from locks/peers/litserve-<arch>.txt), the same
TorchScript network and batch forward as the TorchServe peer (peer_forward), driven by the same load driver.

Its LitAPI batches on its own (max_batch_size 8, batch_timeout 5 ms), one inference worker on the CPU. A request
is what a LitServe user writes first: a JSON body {"npy": base64 of the .npy bytes} (LitServe parses JSON or form
bodies, not raw bytes); the answer comes back as raw .npy bytes in a Response (LitServe's way to return binary
data), so only the request pays base64 and JSON.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from ganserve.benchmarks.peer_forward import from_npy, to_npy
from ganserve.benchmarks.peers import HttpPeer, free_port, server_source

MAX_BATCH_SIZE = 8
BATCH_TIMEOUT_S = 0.005

SERVER = '''
import base64
import sys

import litserve as ls
from fastapi import Response


class NpyAPI(ls.LitAPI):
    """{"npy": base64 .npy} in, raw .npy out; a batch of requests runs as one forward (forward_batch)."""

    def __init__(self, model_path, **kwargs):
        super().__init__(**kwargs)
        self.model_path = model_path  # travels to the worker process with the API object

    def setup(self, device):
        self.model = load_model(self.model_path)
        self.bf16 = bf16_from_env()

    def decode_request(self, request):
        return from_npy(base64.b64decode(request["npy"]))

    def batch(self, inputs):
        return list(inputs)  # forward_batch stacks them (grouped by shape)

    def predict(self, x):
        return forward_batch(self.model, x, self.bf16)

    def encode_response(self, output):
        return Response(content=to_npy(output), media_type="application/octet-stream")


if __name__ == "__main__":
    model_path, port, max_batch, timeout_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    api = NpyAPI(model_path, max_batch_size=max_batch, batch_timeout=timeout_s)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=600)
    server.run(host="127.0.0.1", port=port, num_api_servers=1, generate_client_file=False, log_level="warning")
'''


class LitServePeer(HttpPeer):
    """Start LitServe on 127.0.0.1 (1 worker, its own batching) and post JSON-wrapped .npy tensors to it."""

    peer = "litserve"
    route = "/predict"
    label = "LitServe"

    def __init__(self, *args, max_batch_size: int = MAX_BATCH_SIZE, batch_timeout: float = BATCH_TIMEOUT_S, **kw):
        super().__init__(*args, **kw)
        self.max_batch_size, self.batch_timeout = max_batch_size, batch_timeout

    def setting(self) -> str:
        return (f"LitServe {self.version()}, 1 worker, max_batch_size {self.max_batch_size}, batch_timeout "
                f"{self.batch_timeout * 1000:g} ms; JSON {{\"npy\": base64}} requests, raw .npy replies")

    def prepare(self, venv: Path) -> list[str]:
        script = self.work / "litserve_peer.py"
        script.write_text(server_source(SERVER))
        self.port = free_port()
        return [str(venv / "bin" / "python"), str(script), str(self.ts_path), str(self.port),
                str(self.max_batch_size), str(self.batch_timeout)]

    def encode(self, array: np.ndarray) -> tuple[bytes, dict[str, str]]:
        body = json.dumps({"npy": base64.b64encode(to_npy(array)).decode("ascii")}).encode()
        return body, {"Content-Type": "application/json"}

    def decode(self, body: bytes) -> np.ndarray:
        return from_npy(body)
