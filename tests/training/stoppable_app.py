"""A test application: SRResNet exactly, except that it can stop itself at a given step the way a user or a machine
would stop a run: GANSERVE_TEST_SIGTERM_AT=k sends SIGTERM during step k (the trainer finishes the step, saves an
interrupted checkpoint and stops), GANSERVE_TEST_CRASH_AT=k ends the process during step k with no cleanup, as a
SIGKILL or a lost machine would (only the last periodic checkpoint survives). Loaded by the tests directly and, in a
subprocess, through GANSERVE_PLUGINS=stoppable_app."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Any

from ganserve.training.applications.srresnet import SRResNetApp, SRResNetConfig
from ganserve.training.registry import register_model

NAME = "test-stoppable-sr"


@dataclass
class StoppableConfig(SRResNetConfig):
    pass


@register_model(NAME, StoppableConfig)
class StoppableApp(SRResNetApp):
    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        if step == int(os.environ.get("GANSERVE_TEST_CRASH_AT", "-1")):
            os._exit(137)
        if step == int(os.environ.get("GANSERVE_TEST_SIGTERM_AT", "-1")):
            os.kill(os.getpid(), signal.SIGTERM)
        return super().train_step(batch, step)
