"""The front door's limits: what a slow, idle or greedy client may hold of the server, each with its default and why.

One dataclass, one flag per field (`ganserve serve --help`); docs/security.md explains every value.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Timeouts and caps on both protocols."""

    # HTTP: a request's head (request line and headers) must arrive within this after its first byte (slowloris)
    header_timeout_s: float = 10.0
    # HTTP: a request's body must arrive within this once its head is in (64 MiB at ~9 Mbit/s)
    body_timeout_s: float = 60.0
    # HTTP keep-alive and gRPC: a connection with nothing in flight is closed after this
    idle_timeout_s: float = 30.0
    # HTTP: connections held at once; past it a connection may ask health/readiness only (503 otherwise, then closed)
    max_connections: int = 256
    # gRPC: RPCs in flight at once; past it RESOURCE_EXHAUSTED (health, liveness and readiness are always answered)
    max_rpcs: int = 256
    # gRPC: a connection is asked to go away after this (then max_connection_age_grace for its calls to finish),
    # so long-lived clients re-balance across replicas
    max_connection_age_s: float = 3600.0
    max_connection_age_grace_s: float = 30.0
    # gRPC: a client pinging more often than this (with no call in flight) is told to go away after 2 strikes
    min_ping_interval_s: float = 10.0
    # HTTP: a KServe v2 REST JSON body over this is refused with 413 (the binary tensor extension carries more)
    max_json_mb: float = 8.0

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_mb * 1024 * 1024)
