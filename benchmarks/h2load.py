"""h2load as a gRPC load generator: a pre-encoded ModelInfer call, one run, its numbers.

gRPC is HTTP/2 with a 5-byte prefix (compressed flag, big-endian length) before each
protobuf message, ``content-type: application/grpc`` and ``te: trailers``. h2load (nghttp2)
sends the same body on every stream and logs each request's time, from which the
percentiles come (its text output has no percentiles).

h2load judges by HTTP status only, and a gRPC error is HTTP 200 with ``grpc-status`` in
the trailers. A failed call carries no message, though (the server answers with trailers
alone), so errors are counted from the response bytes: every call that succeeded must
have brought the reply checked before the run (``expected_reply_bytes``); the shortfall
is the number of gRPC errors. A failure that answers a message of the same length would
go unseen: the callers check one call's status before and after each series of runs.
"""

from __future__ import annotations

import re
import statistics
import subprocess
from pathlib import Path

from benchmarks.wrk import LoadResult

INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"
HEADERS = ("content-type: application/grpc", "te: trailers")
_FINISHED = re.compile(r"finished in ([\d.]+)s, ([\d.]+) req/s")
_REQUESTS = re.compile(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, "
                       r"(\d+) failed, (\d+) errored, (\d+) timeout")
_DATA = re.compile(r"traffic: .*, \S+ \((\d+)\) data")


def version() -> str:
    out = subprocess.run(["h2load", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "h2load"


def frame(message: bytes) -> bytes:
    """One uncompressed gRPC message as it travels in a DATA frame."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def write_body(path: Path, message: bytes) -> Path:
    path.write_bytes(frame(message))
    return path


def percentiles(log: Path) -> tuple[float, float, float, float]:
    """p50, p99, mean and max in ms of the per-request times h2load logged (us, third
    tab-separated column)."""
    times = sorted(int(line.split("\t")[2]) / 1000 for line in log.read_text().splitlines()
                   if line.count("\t") >= 2)
    if not times:
        return 0.0, 0.0, 0.0, 0.0
    return (_quantile(times, 0.50), _quantile(times, 0.99), statistics.fmean(times),
            times[-1])


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def parse(output: str, expected_reply_bytes: int) -> tuple[int, float, float, int]:
    """Calls done, seconds, req/s and errors (failed, errored, timeouts, and succeeded
    calls whose reply was missing) from h2load's summary."""
    finished, requests, data = (pattern.search(output) for pattern in (_FINISHED, _REQUESTS,
                                                                         _DATA))
    if not (finished and requests and data):
        raise RuntimeError(f"h2load printed no summary:\n{output[-2000:]}")
    done, succeeded, *failures = (int(n) for n in requests.groups())
    replies = int(data[1]) // expected_reply_bytes if expected_reply_bytes else succeeded
    errors = sum(failures) + max(0, succeeded - replies)
    return done, float(finished[1]), float(finished[2]), errors


def run(url: str, body: Path, connections: int, threads: int, seconds: float,
        expected_reply_bytes: int, log: Path) -> LoadResult:
    """One h2load run of ``seconds`` (one stream per connection) against url's ModelInfer."""
    command = ["h2load", f"-D{max(1, round(seconds))}", f"-c{connections}",
               f"-t{min(threads, connections)}", "-m1", "-d", str(body),
               *(arg for header in HEADERS for arg in ("-H", header)),
               "--log-file", str(log), url + INFER_PATH]
    log.unlink(missing_ok=True)
    out = subprocess.run(command, capture_output=True, text=True, check=False,
                         timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({out.returncode}):\n"
                           f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    done, elapsed, rps, errors = parse(out.stdout, expected_reply_bytes)
    p50, p99, mean, peak = percentiles(log)
    return LoadResult(requests=done, seconds=elapsed, rps=rps, p50_ms=p50, p99_ms=p99,
                      mean_ms=mean, max_ms=peak, errors=errors)
