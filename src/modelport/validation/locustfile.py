"""Locust user for `modelport validate --load`: POSTs one inference request at a constant rate.

Run by the validator in its own process (Locust patches the standard library with gevent); configured
through ``MODELPORT_LOAD_PATH``, ``MODELPORT_LOAD_BODY`` (a file) and ``MODELPORT_LOAD_USER_RPS``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from locust import HttpUser, constant_throughput, task

_PATH = os.environ.get("MODELPORT_LOAD_PATH", "/v2/health/ready")
_BODY = Path(os.environ["MODELPORT_LOAD_BODY"]).read_bytes() if "MODELPORT_LOAD_BODY" in os.environ else b""
_RATE = float(os.environ.get("MODELPORT_LOAD_USER_RPS", "1"))


# Locust typed `constant_throughput` in later releases; through Any the line checks under every version.
_constant_throughput: Any = constant_throughput


class Scorer(HttpUser):
    wait_time = _constant_throughput(_RATE)

    @task
    def infer(self) -> None:
        client: Any = self.client
        client.post(_PATH, data=_BODY, headers={"Content-Type": "application/json"}, name="infer")
