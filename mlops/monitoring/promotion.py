"""Promote or roll back a challenger from what the service measured live.

``read_live`` takes the service's ``/metrics`` text: per model version, the requests it
answered, its errors (5xx) and its latency histogram (the canary's traffic and the
champion's), and the shadow's agreeing and disagreeing rows. ``decide`` judges them
against ``PromotionThresholds``: roll back as soon as the challenger is measurably worse
(more errors, slower at p99, disagreeing with the champion too often, or, once labelled
rows arrive, a worse primary metric on them: ``labelled_score``), promote when it has
enough traffic and holds on every count, else wait for more. ``TrialService`` is the
service's admin side: its numbers, and the end of a trial.
"""

from __future__ import annotations

import math
from typing import Literal

import httpx
import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict, Field

from mlops.config import ConfigError, DatasetSpec, Settings
from mlops.data.encoding import category_text
from mlops.serving.predictor import OnnxPredictor


class PromotionThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_requests: int = Field(500, ge=1, description="Requests each variant must have "
                              "answered (the canary's) before a promotion.")
    max_error_ratio_increase: float = Field(0.01, ge=0, description="The challenger's error "
                                            "ratio may exceed the champion's by this much.")
    max_p99_ratio: float = Field(1.2, ge=1, description="The challenger's p99 latency may be "
                                 "this multiple of the champion's.")
    min_agreement: float = Field(0.9, ge=0, le=1, description="Share of shadow rows on which "
                                 "the challenger must agree with the champion.")
    min_shadow_rows: int = Field(500, ge=0, description="Shadow rows needed to judge the "
                                 "agreement (0: agreement not required).")
    max_metric_loss: float = Field(0.0, ge=0, description="Once labels arrive: how much "
                                   "worse than the champion's the challenger's primary metric "
                                   "may be (in the metric's units).")
    min_labelled_rows: int = Field(200, ge=1, description="Labelled rows needed to compare "
                                   "the primary metric.")


class VariantStats(BaseModel):
    version: str
    requests: int
    errors: int
    p99_s: float | None  # None: no request measured

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


class LiveStats(BaseModel):
    champion: VariantStats
    challenger: VariantStats
    shadow_agree: int = 0
    shadow_disagree: int = 0

    @property
    def agreement(self) -> float | None:
        rows = self.shadow_agree + self.shadow_disagree
        return self.shadow_agree / rows if rows else None


class LabelledScore(BaseModel):
    """Both versions' primary metric on rows whose outcome is now known."""

    metric: str  # test_auc, test_auc_ovr or test_rmse
    higher_is_better: bool
    rows: int
    champion: float
    challenger: float

    def loss(self) -> float:
        """How much worse the challenger is (negative: better)."""
        gap = self.champion - self.challenger
        return gap if self.higher_is_better else -gap


class Decision(BaseModel):
    action: Literal["promote", "rollback", "wait"]
    reasons: list[str]


def read_live(metrics_text: str, champion: str, challenger: str) -> LiveStats:
    """The two versions' live numbers from the service's Prometheus exposition."""
    counts: dict[tuple[str, str], float] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    shadow: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "mlops_model_requests_total":
                counts[(labels["version"], labels["outcome"])] = sample.value
            elif sample.name == "mlops_model_request_duration_seconds_bucket":
                buckets.setdefault(labels["version"], []).append(
                    (float(labels["le"]), sample.value))
            elif (sample.name == "mlops_shadow_rows_total"
                  and labels["challenger"] == challenger):
                shadow[labels["outcome"]] = sample.value

    def stats(version: str) -> VariantStats:
        ok, errors = counts.get((version, "ok"), 0), counts.get((version, "error"), 0)
        return VariantStats(version=version, requests=int(ok + errors), errors=int(errors),
                            p99_s=quantile(0.99, buckets.get(version, [])))

    return LiveStats(champion=stats(champion), challenger=stats(challenger),
                     shadow_agree=int(shadow.get("agree", 0)),
                     shadow_disagree=int(shadow.get("disagree", 0)))


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """A quantile of a cumulative histogram, interpolated within its bucket as Prometheus'
    ``histogram_quantile`` does; None without observations."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower  # above the highest finite bound: report that bound
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def decide(live: LiveStats, thresholds: PromotionThresholds,
           labelled: LabelledScore | None = None) -> Decision:
    """Roll back on any measured regression, promote when every count holds on enough
    traffic, else wait. The primary metric counts once labelled rows are given."""
    champion, challenger = live.champion, live.challenger
    worse, missing = [], []
    if labelled is not None and labelled.rows >= thresholds.min_labelled_rows:
        if labelled.loss() > thresholds.max_metric_loss:
            worse.append(f"{labelled.metric} {labelled.challenger:.4f} vs the champion's "
                         f"{labelled.champion:.4f} on {labelled.rows} labelled rows")
    elif labelled is not None:
        missing.append(f"{labelled.rows} of {thresholds.min_labelled_rows} labelled rows")
    if challenger.requests and champion.requests:
        increase = challenger.error_ratio - champion.error_ratio
        if increase > thresholds.max_error_ratio_increase:
            worse.append(f"error ratio {challenger.error_ratio:.2%} vs the champion's "
                         f"{champion.error_ratio:.2%} (at most +"
                         f"{thresholds.max_error_ratio_increase:.2%})")
    agreement = live.agreement
    shadow_rows = live.shadow_agree + live.shadow_disagree
    if agreement is not None and shadow_rows >= thresholds.min_shadow_rows:
        if agreement < thresholds.min_agreement:
            worse.append(f"agrees with the champion on {agreement:.1%} of {shadow_rows} shadow "
                         f"rows (at least {thresholds.min_agreement:.0%})")
    elif thresholds.min_shadow_rows:
        missing.append(f"{shadow_rows} of {thresholds.min_shadow_rows} shadow rows")
    enough = min(champion.requests, challenger.requests) >= thresholds.min_requests
    if enough and champion.p99_s and challenger.p99_s:
        ratio = challenger.p99_s / champion.p99_s
        if ratio > thresholds.max_p99_ratio:
            worse.append(f"p99 {challenger.p99_s * 1000:.2f} ms, {ratio:.2f}x the champion's "
                         f"(at most {thresholds.max_p99_ratio:.2f}x)")
    if not enough:
        missing.append(f"{challenger.requests} challenger and {champion.requests} champion "
                       f"requests of {thresholds.min_requests} each")
    if worse:
        return Decision(action="rollback", reasons=worse)
    if missing:
        return Decision(action="wait", reasons=[f"not enough yet: {m}" for m in missing])
    quality = (f"{labelled.metric} {labelled.challenger:.4f} (champion "
               f"{labelled.champion:.4f}, {labelled.rows} labelled rows)" if labelled
               else "primary metric not judged: no labels yet")
    return Decision(action="promote", reasons=[
        f"error ratio {challenger.error_ratio:.2%} (champion {champion.error_ratio:.2%}), "
        f"p99 {challenger.p99_s * 1000:.2f} ms (champion {champion.p99_s * 1000:.2f} ms)"
        + (f", agreement {agreement:.1%}" if agreement is not None else ""), quality])


class TrialService:
    """A model's running service, as its admin: its live numbers, and the trial's end.

    The local service's URL and admin token come from its directory (the deploy stage's);
    elsewhere the URL is given and the token read from ``token_file``."""

    def __init__(self, url: str, token: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, timeout=timeout_s,
                                    headers={"Authorization": f"Bearer {token}"})

    @classmethod
    def local(cls, settings: Settings, model: str) -> TrialService:
        from mlops.serving.deploy import admin_token_path, service_dir

        port = service_dir(settings, model) / "port"
        if not port.exists():
            raise ConfigError(f"no service of {model} on this machine ({port} is missing): "
                              "deploy it first, or give its url")
        return cls(f"http://{settings.serve_host}:{port.read_text().strip()}",
                   admin_token_path(settings, model).read_text().strip())

    def observe(self) -> LiveStats:
        """Both variants' numbers; ValueError when no challenger is on trial."""
        trial = self.status()
        if trial["challenger"] is None or trial["champion"] is None:
            raise ValueError(f"{self.url} has no challenger on trial (start a canary or a "
                             "shadow first: POST /admin/canary, /admin/shadow)")
        metrics = self._client.get("/metrics")
        metrics.raise_for_status()
        return read_live(metrics.text, trial["champion"], trial["challenger"])

    def status(self) -> dict:
        """The trial: shadow ``rate``, canary ``share``, ``champion`` and ``challenger``."""
        return self._call("GET", "/admin/canary")

    def set_trial(self, share: float, rate: float) -> None:
        """The challenger's canary share and shadow rate."""
        self._call("POST", "/admin/canary", {"share": share})
        self._call("POST", "/admin/shadow", {"rate": rate})

    def end_trial(self) -> None:
        """No canary and no shadow any more: the champion answers everyone."""
        self.set_trial(0.0, 0.0)

    def serve_champion(self) -> str:
        """Load the version the champion alias names now; the version served."""
        return str(self._call("POST", "/admin/reload")["serving"])

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        answer = self._client.request(method, path, json=body)
        if answer.status_code >= 400:
            raise RuntimeError(f"{method} {self.url}{path}: {answer.status_code} "
                               f"{answer.text[:300]}")
        return answer.json()


def labelled_score(labels: pd.DataFrame, spec: DatasetSpec, champion: OnnxPredictor,
                   challenger: OnnxPredictor) -> LabelledScore:
    """Both versions' primary metric on labelled rows (the spec's features and label)."""
    from mlops.training.model import quality_metrics  # torch: only where labels arrive
    from mlops.training.train import primary_metric

    missing = [c for c in [*spec.features, spec.label] if c not in labels.columns]
    if missing:
        raise ConfigError(f"the labelled rows lack the columns {missing}")
    labels = labels.dropna(subset=[spec.label])
    metric, higher = primary_metric(spec.task)
    values = {}
    for name, predictor in (("champion", champion), ("challenger", challenger)):
        columns = labels[predictor.feature_names]
        matrix = (columns.to_numpy(dtype=np.float32) if predictor.encoding is None
                  else columns.astype(object).where(columns.notna(), None).to_numpy())
        truth = labels[spec.label].to_numpy()
        if predictor.classes is not None:  # class names or codes to column indices
            index = {category_text(c): i for i, c in enumerate(predictor.classes)}
            truth = np.array([index.get(category_text(v), -1) for v in truth])
        scores = quality_metrics(spec.task, truth, predictor.predict(matrix), "test")
        if metric not in scores:
            raise ConfigError(f"the labelled rows cannot give {metric} (every class must "
                              "occur among them)")
        values[name] = scores[metric]
    return LabelledScore(metric=metric, higher_is_better=higher, rows=len(labels), **values)
