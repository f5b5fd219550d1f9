"""NDJSON mode against its physical limit, and peak memory against N.

    python -m bench.ndjson --source DIR [--repeats 5]           throughput on a generated folder
    python -m bench.ndjson --memory 1000,10000 --work DIR       peak memory, fresh process per N

The limit of the NDJSON path is reading the files and decoding every line (`json.loads`),
nothing else: no screener can be faster than that on this machine with this Python. "Ours" is
exactly what `medcare-screen screen --source DIR` does: LocalSource groups the resources by
patient and the Screener screens each record. "Prototype" is bench/stream_prototype.py (the
streaming design proposed in bench/README.md) with the same Screener. All three run in the same
process, rotating which goes first, after one untimed pass of each so that all read from the
page cache; each figure is the median.

Peak memory is the child's own `ru_maxrss` (the high-water mark of resident memory), measured
in a fresh interpreter per (N, mode) so one run's heap cannot hide another's. The child runs
under an address-space limit (RLIMIT_AS): if ours needs more, the row says so instead of the
machine swapping or the OOM killer picking a victim among other people's processes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from bench.generate import DEFAULT_AS_OF, Mix, generate
from bench.stream_prototype import observation_codes, stream_records
from service.fhir.local_source import LocalSource
from service.mapping import load_mappings
from service.screening.engine import Screener

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CAP_GB = 8.0
MODES = ("raw", "ours", "prototype")


def ndjson_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.ndjson"))


def raw_parse(folder: Path) -> tuple[int, int]:
    """The limit: decode every line of every file, keep nothing. Returns (resources, bytes)."""
    count = size = 0
    for path in ndjson_files(folder):
        size += path.stat().st_size
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    json.loads(line)
                    count += 1
    return count, size


def ours_screen(folder: Path, screener: Screener, as_of: date) -> tuple[int, float]:
    """What `medcare-screen screen --source folder` does. Returns (patients, screen seconds)."""
    patients = 0
    screen_s = 0.0
    for record in LocalSource(folder).records():
        started = time.perf_counter()
        screener.screen(record, as_of)
        screen_s += time.perf_counter() - started
        patients += 1
    return patients, screen_s


def prototype_screen(folder: Path, screener: Screener, as_of: date) -> tuple[int, float]:
    """The streaming prototype (bench/stream_prototype.py) doing the same work as ours_screen."""
    patients = 0
    screen_s = 0.0
    with tempfile.TemporaryDirectory(prefix="medcare-stream-") as scratch:
        select = observation_codes(screener.mappings)
        for record in stream_records(folder, Path(scratch), select=select):
            started = time.perf_counter()
            screener.screen(record, as_of)
            screen_s += time.perf_counter() - started
            patients += 1
    return patients, screen_s


@dataclass
class Throughput:
    mb: float
    resources: int
    patients: int
    raw_s: list[float]
    ours_s: list[float]
    ours_screen_s: list[float]
    prototype_s: list[float]
    prototype_screen_s: list[float]

    def summary(self) -> dict[str, Any]:
        raw = statistics.median(self.raw_s)
        ours = statistics.median(self.ours_s)
        screen = statistics.median(self.ours_screen_s)
        return {
            "mb": round(self.mb, 1),
            "patients": self.patients,
            "resources": self.resources,
            "repeats": len(self.raw_s),
            "raw_parse_s": round(raw, 3),
            "raw_mb_per_s": round(self.mb / raw, 1),
            "raw_patients_per_s": round(self.patients / raw, 1),
            "ours_s": round(ours, 3),
            "ours_mb_per_s": round(self.mb / ours, 1),
            "ours_patients_per_s": round(self.patients / ours, 1),
            "ours_read_group_s": round(ours - screen, 3),
            "ours_screen_s": round(screen, 3),
            "ours_over_raw_time": round(ours / raw, 2),
            "target_ours_over_raw_time": 2.0,
            "prototype_s": round(statistics.median(self.prototype_s), 3),
            "prototype_mb_per_s": round(self.mb / statistics.median(self.prototype_s), 1),
            "prototype_patients_per_s": round(
                self.patients / statistics.median(self.prototype_s), 1
            ),
            "prototype_over_raw_time": round(statistics.median(self.prototype_s) / raw, 2),
            "prototype_screen_s": round(statistics.median(self.prototype_screen_s), 3),
        }


def throughput(folder: Path, repeats: int, as_of: date = DEFAULT_AS_OF) -> Throughput:
    """Raw parse and ours, alternated, `repeats` times each after one untimed warm-up of each."""
    screener = Screener(load_mappings())
    resources, size = raw_parse(folder)  # warm-up: page cache, imports
    patients, _ = ours_screen(folder, screener, as_of)
    raw_s: list[float] = []
    ours_s: list[float] = []
    screen_s: list[float] = []
    prototype_s: list[float] = []
    prototype_screen_s: list[float] = []
    for repeat in range(repeats):
        order = ["raw", "ours", "prototype"]
        for which in order[repeat % 3 :] + order[: repeat % 3]:  # rotate who goes first
            gc.collect()
            started = time.perf_counter()
            if which == "raw":
                raw_parse(folder)
                raw_s.append(time.perf_counter() - started)
            elif which == "ours":
                _, spent = ours_screen(folder, screener, as_of)
                ours_s.append(time.perf_counter() - started)
                screen_s.append(spent)
            else:
                _, spent = prototype_screen(folder, screener, as_of)
                prototype_s.append(time.perf_counter() - started)
                prototype_screen_s.append(spent)
    return Throughput(
        size / 1e6, resources, patients, raw_s, ours_s, screen_s, prototype_s, prototype_screen_s
    )


# --- memory --------------------------------------------------------------------------------
def _child(folder: Path, mode: str, as_of: date) -> dict[str, Any]:
    """Runs in the fresh interpreter: one pass of `mode`, then this process's peak RSS."""
    screener = Screener(load_mappings())
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    patients = 0
    try:
        if mode == "raw":
            raw_parse(folder)
        elif mode == "prototype":
            patients, _ = prototype_screen(folder, screener, as_of)
        else:
            patients, _ = ours_screen(folder, screener, as_of)
    except MemoryError:
        return {"mode": mode, "exceeded_cap": True, "base_mb": round(base_mb)}
    return {
        "mode": mode,
        "exceeded_cap": False,
        "patients": patients,
        "seconds": round(time.perf_counter() - started, 2),
        "base_mb": round(base_mb),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def peak_memory(
    folder: Path, mode: str, cap_gb: float, as_of: date = DEFAULT_AS_OF
) -> dict[str, Any]:
    """Peak RSS of one (folder, mode) pass in a fresh interpreter limited to `cap_gb` of address
    space."""
    cap = int(cap_gb * 1024**3)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    command = [
        sys.executable,
        "-m",
        "bench.ndjson",
        "--child",
        str(folder),
        "--mode",
        mode,
        "--as-of",
        as_of.isoformat(),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        preexec_fn=limit,
        timeout=3600,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"mode": mode, "exceeded_cap": True, "exit": done.returncode, "error": tail[0][:200]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["cap_gb"] = cap_gb
    return result


def memory_by_n(
    sizes: list[int],
    seed: int,
    work: Path,
    cap_gb: float,
    mix: Mix | None = None,
    keep: bool = False,
) -> list[dict[str, Any]]:
    """For each N: generate (NDJSON), measure raw and ours peak RSS, remove the folder."""
    rows = []
    for n in sizes:
        folder = work / f"ndjson-n{n}"
        if not (folder / "Patient.ndjson").exists():
            shutil.rmtree(folder, ignore_errors=True)
            generate(n, seed, folder, "ndjson", mix=mix)
        size_mb = sum(p.stat().st_size for p in ndjson_files(folder)) / 1e6
        row: dict[str, Any] = {"n": n, "mb": round(size_mb, 1)}
        for mode in MODES:
            row[mode] = peak_memory(folder, mode, cap_gb)
        rows.append(row)
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ndjson", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--source", type=Path, help="a folder written by bench.generate --format ndjson"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory", help="comma-separated N values, e.g. 1000,10000")
    parser.add_argument("--work", type=Path, default=Path("/tmp/medcare-bench"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cap-gb", type=float, default=DEFAULT_CAP_GB)
    parser.add_argument("--as-of", type=date.fromisoformat, default=DEFAULT_AS_OF)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(_child(args.child, args.mode, args.as_of)))
        return 0
    if args.source is not None:
        print(json.dumps(throughput(args.source, args.repeats, args.as_of).summary(), indent=2))
    if args.memory:
        sizes = [int(n) for n in args.memory.split(",")]
        print(json.dumps(memory_by_n(sizes, args.seed, args.work, args.cap_gb), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
