"""What every benchmark does with its targets: one PASS/FAIL line each, then the exit status.

Full mode judges each target after the whole table is printed and exits 1 when any falls
short; quick mode (``--quick``: tiny sizes, so the tests can run every benchmark) says that
it judged none and exits 0. Standard library only: ``gpu_check`` runs where little more
than torch and numpy is installed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

QUICK_NOTE = "quick mode (tiny sizes): targets not checked"
_VERDICT = {True: "PASS", False: "FAIL", None: "n/a "}


class Target(NamedTuple):
    """One target and what this run measured; passed is None when it was not measured
    (a subset of the benchmark ran), which neither passes nor fails."""

    name: str
    passed: bool | None
    measured: str


def missed(targets: Iterable[Target]) -> list[Target]:
    return [target for target in targets if target.passed is False]


def verdict_lines(targets: list[Target]) -> list[str]:
    """A PASS/FAIL (or n/a) line per target, then one line for them all."""
    lines = [f"- {_VERDICT[t.passed]} {t.name}: {t.measured}" for t in targets]
    failed = missed(targets)
    lines.append(f"FAIL: {len(failed)} of {len(targets)} targets missed" if failed
                 else f"PASS: every target met ({len(targets)})")
    return lines


def conclude(targets: list[Target], quick: bool, heading: str = "Targets:") -> int:
    """Print the heading and the verdicts (in quick mode, that there are none); return the
    exit status: 1 when a target was missed in full mode, else 0."""
    print(f"\n{heading}")
    if quick:
        print(QUICK_NOTE)
        return 0
    print("\n".join(verdict_lines(targets)))
    return 1 if missed(targets) else 0
