"""Every benchmark of issue #5 in one invocation: a table on stdout and bench/results.json.

    .venv/bin/python -m bench.run                 the figures of bench/README.md (~23 min on 2 cores)
    .venv/bin/python -m bench.run --quick         a smoke run (tiny N, no servers, seconds)

Order: machine facts; generator speed; NDJSON mode against the raw parse; peak memory per N;
then, per FHIR server peer, load a population and screen slices of it with ours and the
baseline, alternated (ours first on even repeats, baseline first on odd ones, so neither always
meets a cold or warm server), at concurrency 1 and 8. Each slice of patients is screened by both
readers in the same repeat and never again, so no reader profits from a server-side cache of
its own earlier searches. Every figure is the median over repeats; ratios are ours / baseline
from this same invocation. Loopback only; each measurement has a time budget.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

from bench import command_line
from bench.api import api_latency
from bench.generate import DEFAULT_AS_OF, Mix, generate, patient_id
from bench.load import LoadError, bundles_generated, load
from bench.ndjson import memory_by_n, phases, throughput
from bench.serverbench import (
    BaselineFactory,
    Measurement,
    RequestCounter,
    measure,
    ours_factory,
)
from bench.servers import PeerUnavailable, running, server_rss_mb
from service.compose import make_screener
from service.settings import Settings

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results.json"
CONCURRENCY = (1, 8)
# Per-peer sizing. Medplum's in-memory router evaluates a search by scanning every stored
# resource of the type (measured: 16 s for one `Observation?patient=X` with 20 default patients
# loaded), so against it only a small, low-noise population finishes in bounded time; its rows
# compare request patterns, not a hospital-sized server.
SERVER_PROFILES: dict[str, dict[str, float]] = {
    "hapi": {},
    "medplum": {"noise": 0.1, "slice1": 2, "slice8": 4},
}
NOT_MEASURED_API = {"available": False, "why": "no FHIR server was run (--servers '')"}


def _git(*args: str) -> str:
    """What `git <args>` prints in the repository: the commit a figure was measured at."""
    done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, check=False)
    return done.stdout.strip()


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().split("\n")
    total_kb = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:")), 0)
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "service")
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().split("\n")
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "ram_gb": round(total_kb / 1024**2, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit + ("+uncommitted service/ changes" if dirty else ""),
        "loadavg_start": os.getloadavg(),
    }


def generator_speed(n: int, seed: int, work: Path, mix: Mix) -> tuple[dict[str, Any], Path]:
    folder = work / f"ndjson-gen-n{n}"
    started = time.perf_counter()
    stats = generate(n, seed, folder, "ndjson", mix=mix)
    seconds = time.perf_counter() - started
    return {
        "n": n,
        "resources": stats.resources,
        "resources_per_patient": round(stats.resources / max(n, 1)),
        "mb": round(stats.bytes / 1e6, 1),
        "seconds": round(seconds, 2),
        "patients_per_s": round(n / seconds, 1),
        "mb_per_s": round(stats.bytes / 1e6 / seconds, 1),
        "by_type": stats.by_type,
    }, folder


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def server_bench(
    name: str,
    slices: dict[int, int],
    repeats: int,
    seed: int,
    mix: Mix,
    work: Path,
    budget_s: float,
    as_of: date,
    api: bool = False,
) -> dict[str, Any]:
    """Start peer `name`, load just enough patients, then measure ours and baseline (and,
    with `api`, the HTTP service's latency against the same server and patients).

    `slices` maps each concurrency to the patients of one measurement; every (concurrency,
    repeat) gets its own patients, plus one warm-up patient, so the server loads
    repeats * sum(slices) + 1 patients.
    """
    profile = SERVER_PROFILES.get(name, {})
    mix = Mix(noise=profile.get("noise", mix.noise))
    slices = {c: int(profile.get(f"slice{c}", size)) for c, size in slices.items()}
    n = repeats * sum(slices.values()) + 1
    ids = [patient_id(seed, index) for index in range(n)]
    warm_up_id = ids.pop()
    screener = make_screener(Settings())
    mappings = screener.mappings
    out: dict[str, Any] = {
        "server": name,
        "patients_loaded": n,
        "noise": mix.noise,
        "patients_per_measurement": {str(c): size for c, size in slices.items()},
        "repeats": repeats,
    }
    runs: dict[str, list[Measurement]] = {}
    mismatches: list[str] = []
    try:
        with running(name, work / "logs") as base_url:
            started = time.perf_counter()
            stats = load(
                base_url, bundles_generated(n, seed, as_of, mix), total=n, progress=sys.stderr
            )
            out["load"] = {
                "resources": stats.resources,
                "seconds": round(time.perf_counter() - started, 1),
                "resources_per_s": round(stats.resources_per_s),
            }
            out["server_rss_mb_after_load"] = server_rss_mb(base_url)
            ours = ours_factory(base_url, mappings)
            out["ours_available"] = ours if isinstance(ours, str) else True
            counter = RequestCounter()
            with counter.installed():
                # one untimed patient per reader: connection pools, the CapabilityStatement that
                # ServerSource reads once per run, the server's JIT on these query shapes
                warm_ups = [BaselineFactory(base_url)] + ([] if isinstance(ours, str) else [ours])
                for factory in warm_ups:
                    measure("warm-up", factory, screener, [warm_up_id], 1, as_of, counter, budget_s)
                position = 0
                for concurrency, size in slices.items():
                    for repeat in range(repeats):
                        chunk = ids[position : position + size]
                        position += size
                        readers: list[tuple[str, Any]] = [("baseline", BaselineFactory(base_url))]
                        if not isinstance(ours, str):
                            readers.insert(0, ("ours", ours))
                        if repeat % 2 == 1:
                            readers.reverse()
                        got: dict[str, Measurement] = {}
                        for label, factory in readers:
                            m = measure(
                                label,
                                factory,
                                screener,
                                chunk,
                                concurrency,
                                as_of,
                                counter,
                                budget_s,
                            )
                            got[label] = m
                            runs.setdefault(f"{label}@{concurrency}", []).append(m)
                            print(
                                f"  {name} {label} c={concurrency} r={repeat}: {m.summary()}",
                                file=sys.stderr,
                            )
                        if "ours" in got:
                            for pid, text in got["baseline"].results.items():
                                if pid in got["ours"].results and got["ours"].results[pid] != text:
                                    mismatches.append(pid)
            out["server_rss_mb_after_runs"] = server_rss_mb(base_url)
            if not isinstance(ours, str):
                ours.close()
            if api:
                print(f"bench: API latency against {name} ...", file=sys.stderr)
                out["api"] = api_latency(base_url, ids, as_of, work / "api", budget_s=budget_s)
                print(f"  {json.dumps(out['api'])}", file=sys.stderr)
    except (PeerUnavailable, LoadError) as exc:
        out["unavailable"] = str(exc)[:500]
        return out
    out["runs"] = {key: [m.summary() for m in ms] for key, ms in runs.items()}
    out["results_identical"] = not mismatches
    out["mismatched_patients"] = mismatches[:10]
    medians: dict[str, dict[str, float]] = {}
    for key, ms in runs.items():
        medians[key] = {
            "patients_per_s": _median([m.patients_per_s for m in ms]),
            "requests_per_patient": _median([m.requests_per_patient for m in ms]),
            "kb_per_patient": _median([m.kb_per_patient for m in ms]),
            "cpu_ms_per_patient": _median([m.cpu_ms_per_patient for m in ms]),
            "screen_cpu_ms_per_patient": _median([m.screen_cpu_ms_per_patient for m in ms]),
            "errors": sum(len(m.errors) for m in ms),
        }
    out["medians"] = medians
    return out


def ratio(ours: float | None, base: float | None) -> float | None:
    if not ours or not base:
        return None
    return round(ours / base, 2)


def mark(ok: bool | None) -> str:
    """A target's verdict after it: met, missed, or nothing when it could not be judged."""
    return "" if ok is None else (" ✓" if ok else " ✗")


# Per-patient server measures at concurrency 1: (row label, key, digits, ratio shown, target).
PER_PATIENT_ROWS = (
    ("HTTP requests/patient", "requests_per_patient", 1, True, "1 (+paging) vs ≥ 5"),
    ("KB received/patient", "kb_per_patient", 0, True, "–"),
    ("client CPU ms/patient (all)", "cpu_ms_per_patient", 1, True, "–"),
    ("of which Screener.screen ms/patient", "screen_cpu_ms_per_patient", 1, False, "–"),
)


def table(results: dict[str, Any]) -> str:
    """The README table: one row per measure, ours | baseline or limit | ratio | target."""
    rows: list[tuple[str, str, str, str, str]] = []

    def fmt(value: Any, digits: int = 1) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return str(value)

    gen = results["generator"]
    rows.append(
        (
            "generator (NDJSON write)",
            f"{gen['patients_per_s']} patients/s, {gen['mb_per_s']} MB/s",
            "–",
            "–",
            "–",
        )
    )
    nd = results["ndjson"]
    ndjson_ok = nd["ours_over_raw_time"] <= nd["target_ours_over_raw_time"]
    rows.append(
        (
            "NDJSON time ours / raw",
            fmt(nd["ours_over_raw_time"], 2),
            "1.00",
            "–",
            "≤ 2" + mark(ndjson_ok),
        )
    )
    rows.append(
        (
            "NDJSON time ours with 2 workers / raw",
            fmt(nd["ours_w2_over_raw_time"], 2),
            "1.00",
            "–",
            "≤ 2" + mark(nd["ours_w2_over_raw_time"] <= nd["target_ours_over_raw_time"]),
        )
    )
    rows.append(
        (
            "NDJSON CPU ours / raw CPU",
            f"{fmt(nd['ours_cpu_over_raw_cpu'], 2)} ({fmt(nd['ours_cpu_s'], 2)} s)",
            f"1.00 ({fmt(nd['raw_cpu_s'], 2)} s)",
            "–",
            "–",
        )
    )
    rows.append(
        (
            "NDJSON CPU ours with 2 workers (parent + workers) / raw CPU",
            f"{fmt(nd['ours_w2_cpu_over_raw_cpu'], 2)} ({fmt(nd['ours_w2_cpu_s'], 2)} s)",
            f"1.00 ({fmt(nd['raw_cpu_s'], 2)} s)",
            "–",
            "–",
        )
    )
    for label, mode, target in (("ours", "ours", "≥ 0.5"), ("ours 2 workers", "ours_w2", "–")):
        speed = fmt(nd["raw_parse_s"] / nd[f"{mode}_s"], 2)
        done = mark(ndjson_ok) if mode == "ours" else ""
        for what, key in (
            (f"MB/s ({label} vs raw json.loads)", "mb_per_s"),
            (f"patients/s ({label} vs raw)", "patients_per_s"),
        ):
            ours, raw = fmt(nd[f"{mode}_{key}"]), fmt(nd[f"raw_{key}"])
            rows.append((f"NDJSON {what}", ours, raw, speed, target + done))
    phase = nd.get("phases")
    if phase:
        raw_s = nd["raw_parse_s"]
        rows.append(
            (
                "NDJSON one process: partition / decode / validate / rest of screen (s)",
                f"{phase['partition_s']:.1f} / {phase['decode_group_s']:.1f} / "
                f"{phase['of_which_validate_s']:.1f} / "
                f"{phase['screen_s'] - phase['of_which_validate_s']:.1f}",
                f"{raw_s:.1f} (raw)",
                f"{phase['partition_s'] / raw_s:.2f} / {phase['decode_group_s'] / raw_s:.2f} / "
                f"{phase['of_which_validate_s'] / raw_s:.2f} / "
                f"{(phase['screen_s'] - phase['of_which_validate_s']) / raw_s:.2f}",
                "–",
            )
        )
    rows.append(
        (
            "NDJSON before (LocalSource) time / raw",
            fmt(nd["localsource_over_raw_time"], 2),
            "1.00",
            "–",
            "–",
        )
    )
    same = nd["same_results"]
    rows.append(
        (
            "same results ours = w2 = LocalSource",
            f"yes ({nd['patients']} patients)"
            if same
            else f"no: {', '.join(nd['mismatched_patients'][:3])}",
            "",
            "",
            "yes" + mark(same),
        )
    )

    def peak(entry: dict[str, Any], key: str = "peak_mb") -> str:
        if entry.get("timed_out_s"):
            return f"timed out ({entry['timed_out_s']} s)"
        if entry.get("exceeded_cap"):
            return f"> {entry.get('cap_gb', '?')} GB cap"
        return f"{entry[key]} MB"

    memory = results["memory"]
    flat: bool | None = None
    if len(memory) > 1:
        first, last = memory[0]["ours"], memory[-1]["ours"]
        flat = (
            "peak_mb" in first
            and "peak_mb" in last
            and not first.get("exceeded_cap")
            and not last.get("exceeded_cap")
            and last["peak_mb"] <= 1.25 * first["peak_mb"]
        )
    for row in memory:
        raw = peak(row["raw"]) + " (raw)"
        label = f"N={row['n']} ({row['mb']} MB)"
        w2 = row["ours_w2"]
        w2_text = peak(w2, "total_peak_mb")
        if "total_peak_mb" in w2 and not w2.get("exceeded_cap"):
            w2_text += f" ({w2['peak_mb']} + 2 × {w2['children_peak_mb']})"
        rows.append(
            (
                f"peak RSS, NDJSON ours {label}",
                peak(row["ours"]),
                raw,
                "–",
                "flat in N" + mark(flat),
            )
        )
        rows.append((f"peak RSS, ours 2 workers (total) {label}", w2_text, raw, "–", "–"))
        rows.append(
            (f"peak RSS, before (LocalSource) {label}", peak(row["localsource"]), raw, "–", "–")
        )
    for server in results["servers"]:
        name = server["server"]
        if "unavailable" in server:
            rows.append((f"{name}", "peer unavailable", server["unavailable"][:80], "–", "–"))
            continue
        med = server["medians"]
        ours_ok = server["ours_available"] is True
        for c in CONCURRENCY:
            o = med.get(f"ours@{c}", {}) if ours_ok else {}
            b = med.get(f"baseline@{c}", {})
            target = "≥ 5" if c == 8 and name == "hapi" else "–"
            ours_text = (
                fmt(o.get("patients_per_s"), 2) if ours_ok else str(server["ours_available"])[:40]
            )
            rows.append(
                (
                    f"{name} patients/s, concurrency {c}",
                    ours_text,
                    fmt(b.get("patients_per_s"), 2),
                    fmt(ratio(o.get("patients_per_s"), b.get("patients_per_s")), 2),
                    target,
                )
            )
        o = med.get(f"ours@{CONCURRENCY[0]}", {}) if ours_ok else {}
        b = med.get(f"baseline@{CONCURRENCY[0]}", {})
        for label, key, digits, with_ratio, target in PER_PATIENT_ROWS:
            rows.append(
                (
                    f"{name} {label}",
                    fmt(o.get(key), digits),
                    fmt(b.get(key), digits),
                    fmt(ratio(o.get(key), b.get(key)), 2) if with_ratio else "–",
                    target,
                )
            )
        rows.append(
            (
                f"{name} same results ours = baseline",
                str(server.get("results_identical")) if ours_ok else "–",
                "",
                "",
                "yes",
            )
        )
    api = results["api"]
    for what, key in (("latest result", "latest_result"), ("one-patient screen", "screen")):
        label = f"API p50 / p99 ms, {what}, {api.get(key, {}).get('clients', 20)} clients"
        if not api["available"]:
            rows.append((label, f"not measured: {api['why'][:60]}", "", "", "–"))
            continue
        stats = api[key]
        text = f"{fmt(stats['p50_ms'])} / {fmt(stats['p99_ms'])}"
        detail = (
            f"{stats['calls']} calls, {stats['errors']} errors, {fmt(stats['requests_per_s'])}/s"
        )
        rows.append((label, text, detail, "", "–"))
    header = ("measure", "ours", "baseline / limit", "ratio", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join(lines)


def _checkpoint(out: Path, results: dict[str, Any]) -> None:
    """Write what is measured so far: a late failure must not cost the earlier sections."""
    out.write_text(json.dumps({**results, "partial": True}, indent=2) + "\n", encoding="utf-8")


# The measurement's knobs (flag, type, default, help), one row each: all of them are written into
# the results as `settings`, so a figure can be traced to what produced it.
OPTIONS: Final[list[tuple[str, type[Any], Any, str]]] = [
    ("--seed", int, 1, ""),
    ("--noise", float, 1.0, "unrelated data scale (1 ~ 600 resources/patient)"),
    ("--ndjson-n", int, 1000, "patients for generator and NDJSON throughput"),
    ("--repeats", int, 5, ""),
    ("--memory-n", str, "1000,10000", "comma-separated N for peak memory ('' = skip)"),
    ("--memory-cap-gb", float, 8.0, ""),
    ("--servers", str, "hapi,medplum", "comma-separated peers ('' = none): hapi, medplum"),
    ("--slice1", int, 6, "patients per measurement at concurrency 1"),
    ("--slice8", int, 16, "patients per measurement at concurrency 8"),
    ("--server-repeats", int, 3, ""),
    ("--api-server", str, "hapi", "the peer the HTTP service's latency is measured on"),
    ("--budget-s", float, 240.0, "time budget of one measurement"),
    ("--work", Path, None, "scratch folder (default: a temp dir)"),
    ("--out", Path, RESULTS, ""),
]


def main(argv: list[str] | None = None) -> int:
    parser = command_line("bench.run", __doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny N, no servers")
    for flag, kind, default, meaning in OPTIONS:
        parser.add_argument(flag, type=kind, default=default, help=meaning or None)
    args = parser.parse_args(argv)
    if args.quick:
        args.ndjson_n, args.repeats, args.memory_n, args.servers = 5, 2, "3,6", ""
    as_of = DEFAULT_AS_OF
    mix = Mix(noise=args.noise)
    with tempfile.TemporaryDirectory(prefix="medcare-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results: dict[str, Any] = {
            "machine": machine(),
            "settings": {k: str(v) for k, v in vars(args).items()},
        }
        print("bench: generator ...", file=sys.stderr)
        results["generator"], folder = generator_speed(args.ndjson_n, args.seed, work, mix)
        print("bench: NDJSON throughput ...", file=sys.stderr)
        results["ndjson"] = throughput(folder, args.repeats, as_of).summary()
        results["ndjson"]["phases"] = phases(folder, as_of)
        print(f"  {json.dumps(results['ndjson'])}", file=sys.stderr)
        _checkpoint(args.out, results)
        sizes = [int(n) for n in args.memory_n.split(",") if n.strip()]
        print(f"bench: peak memory at N={sizes} ...", file=sys.stderr)
        results["memory"] = memory_by_n(sizes, args.seed, work, args.memory_cap_gb, mix)
        print(f"  {json.dumps(results['memory'])}", file=sys.stderr)
        _checkpoint(args.out, results)
        results["servers"] = []
        for name in [s for s in args.servers.split(",") if s.strip()]:
            print(f"bench: server {name} ...", file=sys.stderr)
            results["servers"].append(
                server_bench(
                    name,
                    {1: args.slice1, 8: args.slice8},
                    args.server_repeats,
                    args.seed,
                    mix,
                    work,
                    args.budget_s,
                    as_of,
                    api=name == args.api_server,
                )
            )
            _checkpoint(args.out, results)
        results["api"] = next(
            (server["api"] for server in results["servers"] if "api" in server), NOT_MEASURED_API
        )
        results["machine"]["loadavg_end"] = os.getloadavg()
    text = table(results)
    results["table"] = text
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(text)
    print(f"\nbench: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
