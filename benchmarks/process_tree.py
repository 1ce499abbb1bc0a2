"""Running a benchmark case in a child process while sampling the resident memory of its
whole process tree (Dask's nannies and workers included): the peak is the case's."""

from __future__ import annotations

import subprocess
import threading
import time

import psutil

SAMPLE_S = 0.2


def run_measured(command: list[str]) -> tuple[int, str, float]:
    """Exit code, stdout and the peak RSS in bytes of ``command``'s process tree."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peak = [0]
    sampler = threading.Thread(target=_sample, args=(child.pid, peak), daemon=True)
    sampler.start()
    stdout, _ = child.communicate()
    sampler.join()
    return child.returncode, stdout, peak[0]


def _sample(pid: int, peak: list[int]) -> None:
    try:
        parent = psutil.Process(pid)
        while parent.is_running() and parent.status() != psutil.STATUS_ZOMBIE:
            total = 0
            for proc in [parent, *parent.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            peak[0] = max(peak[0], total)
            time.sleep(SAMPLE_S)
    except psutil.NoSuchProcess:
        return
