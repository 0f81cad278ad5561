"""TorchServe as a peer server: its own venv (.venv-peers/torchserve, from locks/peers/torchserve-<arch>.txt),
the same TorchScript network and batch forward as the other peers (peer_forward), driven by the same load driver.

Two settings: unbatched (batch_size 1), and TorchServe's own batching (batch_size 8, max_batch_delay 5 ms, set per
model in config.properties' `models=` JSON). The handler runs whatever batch the frontend hands it as one forward:
channels_last, under bf16 autocast when the CPU has bf16 hardware (else fp32). Requests and replies are .npy bytes
(shape and dtype travel with the data), posted as application/octet-stream.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ganserve.benchmarks.peer_forward import from_npy, to_npy
from ganserve.benchmarks.peers import HttpPeer, free_port, server_source

HANDLER = '''
import os

from ts.torch_handler.base_handler import BaseHandler


class NpyHandler(BaseHandler):
    """Raw .npy tensors in, .npy tensors out; the batch TorchServe hands over runs as one forward (forward_batch)."""

    def initialize(self, context):
        self.model = load_model(os.path.join(context.system_properties.get("model_dir"), "model.pt"))
        self.bf16 = bf16_from_env()
        self.initialized = True

    def handle(self, data, context):
        arrays = [from_npy(bytes(row.get("body") or row.get("data"))) for row in data]
        return [to_npy(y) for y in forward_batch(self.model, arrays, self.bf16)]
'''


def has_java() -> bool:
    return shutil.which("java") is not None


class TorchServePeer(HttpPeer):
    """Archive the TorchScript model, start TorchServe on 127.0.0.1 (1 worker), post .npy tensors to it."""

    peer = "torchserve"
    route = "/predictions/peer"
    label = "TorchServe"

    def __init__(self, *args, batch_size: int = 1, max_batch_delay_ms: int = 5, **kw):
        super().__init__(*args, **kw)
        self.batch_size, self.max_batch_delay_ms = batch_size, max_batch_delay_ms

    def setting(self) -> str:
        batching = (f"batch_size {self.batch_size}, max_batch_delay {self.max_batch_delay_ms} ms"
                    if self.batch_size > 1 else "unbatched")
        return f"TorchServe {self.version()}, 1 worker, {batching}; .npy bodies"

    def prepare(self, venv: Path) -> list[str]:
        store = self.work / "model_store"
        store.mkdir(parents=True, exist_ok=True)
        (self.work / "handler.py").write_text(server_source(HANDLER))
        shutil.copy(self.ts_path, self.work / "model.pt")
        subprocess.run(
            [str(venv / "bin" / "torch-model-archiver"), "--model-name", "peer", "--version", "1.0",
             "--serialized-file", str(self.work / "model.pt"), "--handler", str(self.work / "handler.py"),
             "--export-path", str(store), "--force"],
            check=True,
        )
        self.port, mgmt, metrics = free_port(), free_port(), free_port()
        # one model, one worker; its batching is a model-level setting (the register API's batch_size and
        # max_batch_delay), here in the models= JSON that config.properties loads at start
        models = {"peer": {"1.0": {"defaultVersion": True, "marName": "peer.mar", "minWorkers": 1, "maxWorkers": 1,
                                   "batchSize": self.batch_size, "maxBatchDelay": self.max_batch_delay_ms,
                                   "responseTimeout": 600}}}
        cfg = self.work / "config.properties"
        cfg.write_text(
            f"inference_address=http://127.0.0.1:{self.port}\nmanagement_address=http://127.0.0.1:{mgmt}\n"
            f"metrics_address=http://127.0.0.1:{metrics}\ndefault_workers_per_model=1\n"
            "install_py_dep_per_model=false\ndisable_system_metrics=true\n"
            # its default 6.5 MB reply limit refuses a x4 SR output of a 256x256 input (12.6 MB as float32)
            "max_request_size=268435456\nmax_response_size=268435456\n"
            f"model_store={store}\nload_models=peer.mar\nmodels={json.dumps(models)}\n"
        )
        return [str(venv / "bin" / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth",
                "--ts-config", str(cfg), "--model-store", str(store)]

    def encode(self, array: np.ndarray) -> tuple[bytes, dict[str, str]]:
        return to_npy(array), {"Content-Type": "application/octet-stream"}

    def decode(self, body: bytes) -> np.ndarray:
        return from_npy(body)
