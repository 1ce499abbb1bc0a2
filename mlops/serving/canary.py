"""The challenger as a canary: a share of entities answered by the challenger, the same
entity always by the same model (sticky), so a client never flips between two models.

A request's entity is the first id of a predict-by-entity request, else its
``X-Entity-Id`` header; a request with neither, or one that names a version, is the
champion's. An entity is in the canary when its stable hash (CRC-32) falls in the first
``share`` of the hash space: raising the share keeps every entity already in it. The
share changes at any time (``POST /admin/canary``); the per-version request, error and
latency series (``mlops_model_requests``) are how the two variants compare.
"""

from __future__ import annotations

import zlib

from mlops.serving.model_manager import ModelManager
from mlops.serving.predictor import OnnxPredictor

ENTITY_HEADER = "x-entity-id"
BUCKETS = 10_000


def bucket(entity: str) -> int:
    """The entity's place in [0, BUCKETS): the same on every replica and every restart."""
    return zlib.crc32(entity.encode()) % BUCKETS


class Canary:
    """Routes a share of entities to the challenger."""

    def __init__(self, challenger: ModelManager, share: float = 0.0) -> None:
        self.challenger, self.share = challenger, share

    @property
    def active(self) -> bool:
        return self.share > 0 and self.challenger.current is not None

    def route(self, champion: OnnxPredictor, entity: str | None) -> OnnxPredictor:
        """The challenger for an entity in the canary, else the champion."""
        challenger = self.challenger.current
        if (entity is None or self.share <= 0 or challenger is None
                or bucket(entity) >= self.share * BUCKETS):
            return champion
        return challenger
