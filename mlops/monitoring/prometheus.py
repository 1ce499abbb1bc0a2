"""Reading Prometheus: range queries over its HTTP API (``/api/v1/query_range``).

What the anomaly detector and the report read. A query that Prometheus refuses (bad PromQL)
or a Prometheus that does not answer is a PrometheusError naming the query and the URL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import httpx
import numpy as np

from mlops.monitoring.anomaly import Series

Points = list[tuple[float, float]]


class PrometheusError(RuntimeError):
    pass


@dataclass(frozen=True)
class Prometheus:
    url: str
    timeout_s: float = 30.0

    def query_range(self, expr: str, start: float, end: float, step: float
                    ) -> list[tuple[dict[str, str], Points]]:
        """Each series of ``expr`` over [start, end] every ``step`` seconds: (labels, points)."""
        try:
            response = httpx.get(f"{self.url}/api/v1/query_range", timeout=self.timeout_s,
                                 params={"query": expr, "start": start, "end": end,
                                         "step": step})
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise PrometheusError(f"Prometheus at {self.url} did not answer {expr!r}: "
                                  f"{exc}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"Prometheus at {self.url} refused {expr!r}: "
                                  f"{body.get('errorType')}: {body.get('error')}")
        return [(dict(item["metric"]), [(float(t), _number(v)) for t, v in item["values"]])
                for item in body["data"]["result"]]

    def series(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        """The same as detector input: a regular time grid, NaN where a sample is missing."""
        grid = np.arange(start, end + step / 2, step)
        found = []
        for labels, points in self.query_range(expr, start, end, step):
            values = np.full(len(grid), np.nan)
            index = np.clip(np.round((np.array([t for t, _ in points]) - start) / step)
                            .astype(int), 0, len(grid) - 1) if points else []
            values[index] = [v for _, v in points]
            found.append(Series(labels, grid.copy(), values))
        return found


def _number(text: str) -> float:
    value = float(text)
    return value if math.isfinite(value) else math.nan
