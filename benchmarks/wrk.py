"""wrk as a library: a generated Lua script per POST body, one run, its numbers as a dataclass.

The script sets method, body and Content-Type, and its ``done()`` prints one line with the
request count, the run's duration, the latency percentiles from wrk's histogram (in
microseconds, more precise than ``--latency``'s rounded text) and the error counters.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

MARK = "WRK_RESULT "
_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "mean_us": %.1f, '
    .. '"max_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\\n',
    MARK, summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), latency.mean, latency.max, e.connect, e.read, e.write,
    e.status, e.timeout))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: int  # non-2xx/3xx statuses + connect/read/write errors + timeouts

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def version() -> str:
    """wrk's version line (``wrk -v`` prints it, then usage, and exits 1)."""
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()[0]
    return re.sub(r"\s+Copyright.*", "", first).strip()


def write_script(path: Path, body: str, method: str = "POST") -> Path:
    """A Lua script that sends ``body`` as JSON on every request and reports in done()."""
    if "]==]" in body:
        raise ValueError("body must not contain the Lua long-string terminator ]==]")
    path.write_text(
        f'local MARK = "{MARK}"\n'
        f'wrk.method = "{method}"\n'
        f"wrk.body = [==[{body}]==]\n"
        'wrk.headers["Content-Type"] = "application/json"\n' + _DONE)
    return path


def run(url: str, script: Path, connections: int, threads: int, seconds: float,
        timeout_s: float = 5.0) -> WrkResult:
    """One wrk run against url; raises when wrk fails or prints no result line."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
               f"--timeout={timeout_s:g}s", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, check=False,
                         timeout=seconds + timeout_s + 30)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith(MARK)), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"{' '.join(command)} failed ({out.returncode}):\n"
                           f"{out.stdout}\n{out.stderr}")
    raw = json.loads(line.removeprefix(MARK))
    elapsed = raw["duration_us"] / 1e6
    errors = sum(raw[key] for key in ("connect", "read", "write", "status", "timeout"))
    return WrkResult(requests=raw["requests"], seconds=elapsed, rps=raw["requests"] / elapsed,
                     p50_ms=raw["p50_us"] / 1000, p99_ms=raw["p99_us"] / 1000,
                     mean_ms=raw["mean_us"] / 1000, max_ms=raw["max_us"] / 1000, errors=errors)
