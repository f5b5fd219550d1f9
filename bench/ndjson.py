"""NDJSON mode against its physical limit, and peak memory against N.

    python -m bench.ndjson --source DIR [--repeats 5]           throughput on a generated folder
    python -m bench.ndjson --memory 1000,10000 --work DIR       peak memory, fresh process per N

The limit of the NDJSON path is reading the files and decoding every line (`json.loads`),
nothing else: no screener can be faster than that on this machine with this Python. Modes:

- `raw`: that limit.
- `ours`: exactly what `medcare-screen screen --source DIR` does by default: `screen_stream`
  over an `NdjsonStream` with the mappings' line filter, in this process.
- `ours_w2`: the same with `--workers 2` (partition here, screen buckets in 2 forked workers).
- `localsource`: the path before streaming (LocalSource groups everything in memory, then the
  Screener screens each record), kept as the "before" figure.

All run in the same process, rotating which goes first, after one untimed pass of each so that
all read from the page cache; each figure is the median. Each mode has a wall time and a CPU
time: this process's `time.process_time` plus the CPU of the worker processes it waited for
(`RUSAGE_CHILDREN`), so that 2 workers cannot look cheaper merely by spending CPU elsewhere.
The untimed pass also checks that ours, ours_w2 and localsource give the same result for every
patient.

Peak memory is the child's own `ru_maxrss` (the high-water mark of resident memory), measured
in a fresh interpreter per (N, mode) so one run's heap cannot hide another's; with workers, the
largest worker's `ru_maxrss` too, and a total that counts it once per worker (conservative:
pages a forked worker shares with its parent are counted twice). The child runs under an
address-space limit (RLIMIT_AS, per process, inherited by its workers): if a mode needs more,
the row says so instead of the machine swapping or the OOM killer picking a victim among other
people's processes.
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
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from bench import command_line
from bench.generate import DEFAULT_AS_OF, Mix, generate
from service.compose import make_screener
from service.fhir.local_source import LocalSource
from service.fhir.ndjson_stream import NdjsonStream
from service.population import Screened, screen_records, screen_stream
from service.screening import extract
from service.screening.engine import Screener
from service.screening.prefilter import line_filter
from service.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CAP_GB = 8.0
TIMEOUT_S = 3600  # one (N, mode) memory pass
MODES = ("raw", "ours", "ours_w2", "localsource")
WORKERS = {"ours": 1, "ours_w2": 2}  # screen_stream's `workers` per streaming mode
SCREENING_MODES = ("ours", "ours_w2", "localsource")


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


def _collect(screened: Iterable[Screened], results: dict[str, str] | None) -> tuple[int, list[str]]:
    """Consume a screen to the end (so that a worker pool is joined and its CPU counted).
    Returns (patients, the error name of each screen that raised); with `results`, also keeps
    each patient's result as canonical JSON."""
    patients = 0
    errors: list[str] = []
    for item in screened:
        patients += 1
        if item.result is None:
            errors.append(item.error or "no result")
        if results is not None:
            results[item.patient_id] = (
                json.dumps(item.result.to_dict(), sort_keys=True)
                if item.result is not None
                else f"error: {item.error}"
            )
    return patients, errors


def screen_mode(
    mode: str,
    folder: Path,
    screener: Screener,
    as_of: date,
    results: dict[str, str] | None = None,
) -> tuple[int, list[str]]:
    """One screening pass of `mode` over `folder`. Returns (patients, errors of screens)."""
    if mode == "localsource":
        return _collect(screen_records(LocalSource(folder).records(), screener, as_of), results)
    stream = NdjsonStream(folder, line_filter(screener.mappings))
    return _collect(screen_stream(stream, screener, as_of, WORKERS[mode]), results)


def _cpu_s() -> float:
    """CPU seconds of this process and of every child it has waited for (pool workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


@dataclass
class Throughput:
    mb: float
    resources: int
    patients: int
    wall_s: dict[str, list[float]] = field(default_factory=dict)
    cpu_s: dict[str, list[float]] = field(default_factory=dict)
    same_results: bool = False
    mismatched_patients: list[str] = field(default_factory=list)
    screen_errors: int = 0
    # 1-minute load average before and after: 2 workers need 2 idle CPUs, so another job on
    # the machine shows in ours_w2 first
    loadavg: tuple[float, float] = (0.0, 0.0)

    def summary(self) -> dict[str, Any]:
        wall = {mode: statistics.median(values) for mode, values in self.wall_s.items()}
        cpu = {mode: statistics.median(values) for mode, values in self.cpu_s.items()}
        raw = wall["raw"]
        out: dict[str, Any] = {
            "mb": round(self.mb, 1),
            "patients": self.patients,
            "resources": self.resources,
            "repeats": len(self.wall_s["raw"]),
            "raw_parse_s": round(raw, 3),
            "raw_cpu_s": round(cpu["raw"], 3),
            "raw_mb_per_s": round(self.mb / raw, 1),
            "raw_patients_per_s": round(self.patients / raw, 1),
        }
        for mode in ("ours", "ours_w2"):
            out |= {
                f"{mode}_s": round(wall[mode], 3),
                f"{mode}_cpu_s": round(cpu[mode], 3),
                f"{mode}_mb_per_s": round(self.mb / wall[mode], 1),
                f"{mode}_patients_per_s": round(self.patients / wall[mode], 1),
                f"{mode}_over_raw_time": round(wall[mode] / raw, 2),
                f"{mode}_cpu_over_raw_cpu": round(cpu[mode] / cpu["raw"], 2),
            }
        out |= {
            "target_ours_over_raw_time": 2.0,
            "localsource_s": round(wall["localsource"], 3),
            "localsource_cpu_s": round(cpu["localsource"], 3),
            "localsource_over_raw_time": round(wall["localsource"] / raw, 2),
            "same_results": self.same_results,
            "mismatched_patients": self.mismatched_patients,
            "screen_errors": self.screen_errors,
            "loadavg_1min_start_end": [round(value, 2) for value in self.loadavg],
        }
        return out


def throughput(folder: Path, repeats: int, as_of: date = DEFAULT_AS_OF) -> Throughput:
    """Every mode, alternated, `repeats` times each after one untimed warm-up of each.

    The warm-up also compares the screening modes' results patient by patient.
    """
    load_start = os.getloadavg()[0]
    screener = make_screener(Settings())
    resources, size = raw_parse(folder)  # warm-up: page cache, imports
    results: dict[str, dict[str, str]] = {}
    errors = 0
    for mode in SCREENING_MODES:
        results[mode] = {}
        errors += len(screen_mode(mode, folder, screener, as_of, results[mode])[1])
    reference = results["localsource"]
    mismatched = sorted(
        pid
        for pid in {pid for got in results.values() for pid in got}
        if len({got.get(pid) for got in results.values()}) != 1
    )
    out = Throughput(
        size / 1e6,
        resources,
        len(reference),
        same_results=not mismatched and bool(reference),
        mismatched_patients=mismatched[:10],
        screen_errors=errors,
    )
    for repeat in range(repeats):
        turn = repeat % len(MODES)
        for mode in MODES[turn:] + MODES[:turn]:  # rotate who goes first
            gc.collect()
            cpu_started = _cpu_s()
            started = time.perf_counter()
            if mode == "raw":
                raw_parse(folder)
            else:
                screen_mode(mode, folder, screener, as_of)
            out.wall_s.setdefault(mode, []).append(time.perf_counter() - started)
            out.cpu_s.setdefault(mode, []).append(_cpu_s() - cpu_started)
    out.loadavg = (load_start, os.getloadavg()[0])
    return out


def phases(folder: Path, as_of: date = DEFAULT_AS_OF) -> dict[str, Any]:
    """Where one process's time goes (the profile behind the ratio), in one timed pass:
    pass 1 (partition), pass 2's decoding and grouping, and the screen split into
    fhir.resources validation and everything else. The validation is timed by wrapping the
    one function the extractor calls for it; the wrapper's own cost is counted as validation.
    """
    screener = make_screener(Settings())
    stream = NdjsonStream(folder, line_filter(screener.mappings))
    spent = {"validate_s": 0.0}
    namespace = vars(extract)  # the extractor's own name for the validator, wrapped below
    real = namespace["validate_resource"]

    def timed(resource: dict[str, Any]) -> None:
        started = time.perf_counter()
        try:
            real(resource)
        finally:
            spent["validate_s"] += time.perf_counter() - started

    namespace["validate_resource"] = timed
    try:
        started = time.perf_counter()
        with stream.partitioned() as partition:
            partition_s = time.perf_counter() - started
            decode_s = screen_s = 0.0
            validated = 0
            for bucket in partition.buckets:
                started = time.perf_counter()
                records = list(stream.read_bucket(partition, bucket))
                decode_s += time.perf_counter() - started
                validated += sum(r.resource_count() for r in records)
                started = time.perf_counter()
                for record in records:
                    screener.screen(record, as_of)
                screen_s += time.perf_counter() - started
    finally:
        namespace["validate_resource"] = real
    return {
        "partition_s": round(partition_s, 3),
        "decode_group_s": round(decode_s, 3),
        "screen_s": round(screen_s, 3),
        "of_which_validate_s": round(spent["validate_s"], 3),
        "resources_decoded": validated,
    }


# --- memory --------------------------------------------------------------------------------
def _child(folder: Path, mode: str, as_of: date) -> dict[str, Any]:
    """Runs in the fresh interpreter: one pass of `mode`, then the peak RSS of this process and
    of its largest worker (none but with ours_w2)."""
    screener = make_screener(Settings())
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    patients = 0
    errors: list[str] = []
    try:
        if mode == "raw":
            raw_parse(folder)
        else:
            patients, errors = screen_mode(mode, folder, screener, as_of)
    except MemoryError:
        return {"mode": mode, "exceeded_cap": True, "base_mb": round(base_mb)}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "mode": mode,
        # a MemoryError inside one screen costs only that patient: it comes back as its error
        "exceeded_cap": "MemoryError" in errors,
        "patients": patients,
        "screen_errors": len(errors),
        "seconds": round(time.perf_counter() - started, 2),
        "base_mb": round(base_mb),
        "peak_mb": round(peak_mb),
        "children_peak_mb": round(children_mb),
        # children_mb is 0 without workers; with them, each may reach it (a bound, see above)
        "total_peak_mb": round(peak_mb + WORKERS.get(mode, 0) * children_mb),
    }


def peak_memory(
    folder: Path, mode: str, cap_gb: float, as_of: date = DEFAULT_AS_OF
) -> dict[str, Any]:
    """Peak RSS of one (folder, mode) pass in a fresh interpreter limited to `cap_gb` of address
    space."""
    cap = int(cap_gb * 1024**3)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    child = ["-m", "bench.ndjson", "--child", str(folder), "--mode", mode]
    command = [sys.executable, *child, "--as-of", as_of.isoformat()]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, cwd=REPO, env=env, preexec_fn=limit,
            timeout=TIMEOUT_S, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:  # e.g. a worker killed from outside: the pool waits on
        return {"mode": mode, "exceeded_cap": False, "timed_out_s": TIMEOUT_S, "cap_gb": cap_gb}
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
    """For each N: generate (NDJSON), measure every mode's peak RSS, remove the folder."""
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
    parser = command_line("bench.ndjson", __doc__)
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
        print(json.dumps(phases(args.source, args.as_of), indent=2))
    if args.memory:
        sizes = [int(n) for n in args.memory.split(",")]
        print(json.dumps(memory_by_n(sizes, args.seed, args.work, args.cap_gb), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
