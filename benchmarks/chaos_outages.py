"""Outages of the production profile's services for the chaos benchmark: each takes a service
away, gives it back, and says when the outage was seen and when the platform was whole again.

- ``RedisRestart``: SIGTERM the platform's redis-server (it writes its append-only file),
  and start it again on the same port and folder. Seen: the inference service's
  predict-by-entity (its Feast online store) answers 503. Whole again: Redis answers PING,
  a key written before the outage is still there, and predict-by-entity answers 200 with
  the predictions it gave before (the same model version), by itself.
- ``ObjectStoreWindow``: the fault proxy in front of moto refuses connections and drops the
  open ones, then lets traffic through again; moto keeps its data. Seen: reading an object
  through the proxy fails; whole again: the object written before the outage reads back.

Probes never retry (one attempt, short timeouts): they measure, the platform retries.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis

from benchmarks.fault_proxy import FaultProxy
from benchmarks.production_services import RedisServer

MARKER = "chaos:marker"  # outside Feast's keys (its keys are serialised entity keys)
PROBE_IDS = [3, 7]  # entities of the synthetic panel (ids 1..n)
TIMEOUT_S = 3.0


@dataclass
class RedisRestart:
    server: RedisServer
    service_url: str
    marker: str = field(default_factory=lambda: secrets.token_hex(8))
    before: dict[str, Any] | None = None  # predict-by-entity's answer before the outage
    why: str = ""  # why the last probe found it not whole

    def prepare(self) -> None:
        self._client().set(MARKER, self.marker)
        self.before = _predict_by_entity(self.service_url)

    def take_away(self) -> None:
        self.server.stop()

    def bring_back(self) -> None:
        self.server.start()

    def seen(self) -> bool:
        response = _ask(self.service_url)
        return response is not None and response.status_code == 503

    def whole(self) -> bool:
        try:
            client = self._client()
            if not client.ping() or client.get(MARKER) != self.marker.encode():
                self.why = "redis lost the key written before"
                return False
        except redis.RedisError as exc:
            self.why = f"redis: {exc}"
            return False
        response = _ask(self.service_url)
        if response is None or response.status_code != 200:
            self.why = f"predict-by-entity: {response.status_code if response else 'no answer'}"
            return False
        after, before = response.json(), self.before
        if before is not None and before["version"] == after["version"] and not all(
                math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
                for a, b in zip(after["predictions"], before["predictions"], strict=True)):
            self.why = f"predictions {after['predictions']}, before {before['predictions']}"
            return False
        return True

    def _client(self) -> redis.Redis:
        return redis.Redis(port=self.server.port, password=self.server.password,
                           socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)


def _predict_by_entity(service_url: str) -> dict[str, Any] | None:
    """The service's answer for the probe's entities when it is 200, else None."""
    response = _ask(service_url)
    return response.json() if response is not None and response.status_code == 200 else None


def _ask(service_url: str) -> httpx.Response | None:
    try:
        return httpx.post(f"{service_url}/v1/predict/entity", json={"entity_ids": PROBE_IDS},
                          timeout=TIMEOUT_S * 2)
    except httpx.HTTPError:
        return None


@dataclass
class ObjectStoreWindow:
    proxy: FaultProxy
    bucket: str
    key: str = field(default_factory=lambda: f"chaos/marker-{secrets.token_hex(4)}")
    client: Any = None  # boto3's S3 client through the proxy
    why: str = ""  # why the last probe found it not whole

    def prepare(self) -> None:
        import boto3
        from botocore.config import Config

        # Credentials and region: the platform's (its AWS_* variables).
        self.client = boto3.client("s3", endpoint_url=self.proxy.endpoint, config=Config(
            retries={"max_attempts": 1}, connect_timeout=TIMEOUT_S, read_timeout=TIMEOUT_S))
        self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self.key.encode())

    def take_away(self) -> None:
        self.proxy.cut()

    def bring_back(self) -> None:
        self.proxy.restore()

    def seen(self) -> bool:
        return not self.whole()

    def whole(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key)["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            self.why = str(exc)
            return False
        self.why = "" if body == self.key.encode() else "the object read back changed"
        return not self.why
