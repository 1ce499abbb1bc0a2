"""wrk as a library: a generated Lua script per POST body, one run, its numbers as a dataclass.

The script sets method, body and headers (Content-Type JSON unless told otherwise), and
its ``done()`` prints one line with the request count, the run's duration, the latency
percentiles from wrk's histogram (in microseconds, more precise than ``--latency``'s
rounded text) and the error counters. The body is written as a Lua string with every
byte outside printable ASCII escaped, so binary bodies (the Open Inference Protocol's
binary tensor extension) arrive byte for byte. ``https://`` URLs are loaded over TLS.
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
class LoadResult:
    """One load run's numbers (wrk's, or h2load's: ``benchmarks.h2load``)."""

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


def lua_string(data: bytes) -> str:
    """A double-quoted Lua literal of exactly these bytes (decimal escapes, 3 digits each,
    so a digit after an escape is never read as part of it)."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\{b:03d}"
                         for b in data) + '"'


def write_script(path: Path, body: str | bytes, method: str = "POST",
                 headers: dict[str, str] | None = None) -> Path:
    """A Lua script that sends ``body`` with ``headers`` (default: JSON's Content-Type) on
    every request and reports in done()."""
    data = body.encode() if isinstance(body, str) else body
    lines = [f"wrk.headers[{lua_string(name.encode())}] = {lua_string(value.encode())}"
             for name, value in (headers or {"Content-Type": "application/json"}).items()]
    path.write_text(f'local MARK = "{MARK}"\nwrk.method = "{method}"\n'
                    f"wrk.body = {lua_string(data)}\n" + "\n".join(lines) + "\n" + _DONE)
    return path


def run(url: str, script: Path, connections: int, threads: int, seconds: float,
        timeout_s: float = 5.0) -> LoadResult:
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
    return LoadResult(requests=raw["requests"], seconds=elapsed, rps=raw["requests"] / elapsed,
                     p50_ms=raw["p50_us"] / 1000, p99_ms=raw["p99_us"] / 1000,
                     mean_ms=raw["mean_us"] / 1000, max_ms=raw["max_us"] / 1000, errors=errors)
