"""The chaos benchmark's two streams: pipeline runs submitted for the teams, and wrk's load on
the inference service in short slices, so that each failed request can be placed inside or
outside the windows when the service was down.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks import wrk
from benchmarks.chaos_stack import FINAL, Api

SLICE_S, PAUSE_S = 2.0, 1.0  # wrk runs 2 s, then rests 1 s (the machine has 2 cores)


class Slice(NamedTuple):
    """One wrk run (monotonic start and end), its requests and failed requests."""

    start: float
    end: float
    requests: int
    errors: int


class LoadGenerator(threading.Thread):
    """wrk -t1 -c1 POSTing one row to ``/v1/predict``, slice after slice, until stopped."""

    def __init__(self, url: str, body: dict[str, Any], folder: Path) -> None:
        super().__init__(daemon=True)
        self.url, self.stopping = url, threading.Event()
        self.slices: list[Slice] = []
        self.script = wrk.write_script(folder / "chaos-predict.lua", json.dumps(body))

    def run(self) -> None:
        while not self.stopping.is_set():
            start = time.monotonic()
            try:
                result = wrk.run(self.url, self.script, 1, 1, SLICE_S, timeout_s=2.0)
                self.slices.append(Slice(start, time.monotonic(), result.requests,
                                         result.errors))
            except RuntimeError:  # wrk could not run at all: count the slice as failed
                self.slices.append(Slice(start, time.monotonic(), 1, 1))
            self.stopping.wait(PAUSE_S)

    def stop(self) -> list[Slice]:
        self.stopping.set()
        self.join(timeout=SLICE_S + 40)
        return self.slices


@dataclass
class RunStream:
    """Seeded submissions of each team's training run, at most ``in_flight`` unfinished per
    team; every accepted run's id is kept (by team), and every refused submission."""

    api: Api
    deployments: dict[str, str]  # team -> deployment id
    parameters: dict[str, dict[str, Any]]  # team -> the run's parameters
    seed: int
    in_flight: int = 1
    submitted: dict[str, list[str]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)  # run id -> when accepted (monotonic)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def submit(self, team: str) -> str | None:
        key = f"chaos-{team}-{len(self.submitted.get(team, []))}-{self.seed}"
        response = self.api.post(f"/deployments/{self.deployments[team]}/create_flow_run",
                                 {"parameters": self.parameters[team], "idempotency_key": key})
        if response.status_code != 201:
            self.refused.append(f"{team}: {response.status_code} {response.text[:200]}")
            return None
        run = response.json()["id"]
        self.submitted.setdefault(team, []).append(run)
        self.times[run] = time.monotonic()
        return run

    def top_up(self, limit: int | None = None) -> None:
        """Submit for the teams (in a seeded order) that have fewer than ``in_flight``
        unfinished runs, up to ``limit`` runs in all."""
        teams = list(self.deployments)
        self.rng.shuffle(teams)
        for team in teams:
            if limit is not None and self.count() >= limit:
                return
            if len(self.unfinished(team)) < self.in_flight:
                self.submit(team)

    def count(self) -> int:
        return sum(len(ids) for ids in self.submitted.values())

    def ids(self) -> list[str]:
        return [run for ids in self.submitted.values() for run in ids]

    def unfinished(self, team: str | None = None) -> list[str]:
        ids = self.submitted.get(team, []) if team else self.ids()
        if not ids:
            return []
        body = {"flow_runs": {"id": {"any_": ids}}}
        runs = self.api.post("/flow_runs/filter", body).json()
        return [run["id"] for run in runs if run["state"]["type"] not in FINAL]

    def running(self, among: list[str]) -> str | None:
        """One of the runs ``among`` (the stream's or not) that is RUNNING, if any."""
        body = {"flow_runs": {"id": {"any_": among}, "state": {"type": {"any_": ["RUNNING"]}}}}
        runs = self.api.post("/flow_runs/filter", body).json() if among else []
        return runs[0]["id"] if runs else None

    def state(self, run: str) -> str:
        return self.api.get(f"/flow_runs/{run}")["state"]["type"]
