"""Smoke run of bench/currency.py (issue 14, "Measure"): at a tiny size, against the HAPI peer
and a throwaway PostgreSQL, it produces every figure it promises.

No timed assertion: the figures live in bench/README.md. What is asserted is what would make
them wrong: a change that never reached the feed, a feed entry from the wrong trigger, a
patient left stale after the endpoint came back, a queued patient not screened by the workers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.currency import run


def test_the_currency_bench_produces_its_figures(tmp_path: Path) -> None:
    args = argparse.Namespace(
        changes=4, patients=2, sweep_s=3, lost_patients=2, lost_changes=6, down_s=2,
        scale=3, processes=[1, 2],
    )  # fmt: skip
    report = run(args, tmp_path)

    paths = {
        "by sweep alone": ("sweep", "subscription"),
        "by subscription": ("subscription", "sweep"),
    }
    for mode, (trigger, other) in paths.items():
        figures = report[mode]
        assert figures["n"] == 4 and figures["missed"] == 0, figures
        # the path measured brought the entries; a first one may still name the cohort join
        # (a coalesced job names its first trigger), never the other path
        assert trigger in figures["triggers"] and other not in figures["triggers"], figures
        assert figures["p50_s"] <= figures["p99_s"]
    lost = report["nothing lost"]
    assert lost["changes"] == 6 and lost["not_current"] == 0, lost
    assert lost["screens"] >= 2, lost  # at least one screen per changed patient
    for processes in (1, 2):
        scaled = report["scale-out"][f"{processes} worker process(es)"]
        assert scaled["patients/s"] > 0 and len(scaled["cpu_s workers / hapi / postgres"]) == 3
