"""A prototype of streaming NDJSON mode: memory bounded whatever N, for the lead to port.

    python -m bench.stream_prototype --source DIR [--bucket-mb 16]

LocalSource today decodes every line of every file, keeps every kept resource of every
patient, then groups: peak memory grows ~2.5 MB per patient (bench/README.md). This prototype
shows the alternative measured next to it, in two passes over the files:

1. Partition, without decoding JSON. For each line: its resource type and patient are read
   with two regular expressions on the raw bytes (`"resourceType":"X"`, then the `subject` or
   `patient` reference); lines of types the rules never read (Encounter, Claim, ...) are
   dropped here, undecoded; Patient lines go by their `id`; Medication lines (not about one
   patient) are kept in a dict. Every other line is appended, as bytes, to bucket file
   hash(patient) % B, with B chosen so that a bucket holds about `bucket_mb` of JSON. A line
   the expressions cannot place (unusual formatting) is decoded once with json.loads instead.
2. Screen bucket by bucket: decode its lines, group them into PatientRecords, screen, drop.

Peak memory is one bucket's records plus the Medications, not the population; the JSON decode
happens once per relevant line, so the time stays close to the raw-parse limit. Output order is
by bucket, not by the Patient file (sort the results if the order matters).
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
import zlib
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import IO, Any

from bench.generate import DEFAULT_AS_OF
from service.fhir.local_source import KEPT_TYPES
from service.fhir.record import PatientRecord, type_and_id
from service.mapping import Mappings, load_mappings
from service.mapping.model import normalize_code
from service.screening.concepts import OBSERVATION_CONCEPTS
from service.screening.engine import Screener

_TYPE = re.compile(rb'"resourceType"\s*:\s*"([A-Za-z]+)"')
_SUBJECT = re.compile(rb'"(?:subject|patient)"\s*:\s*\{[^{}]*?"reference"\s*:\s*"([^"]+)"')
_KEPT = frozenset(t.encode() for t in KEPT_TYPES)
_PLAIN = re.compile(r"[a-z0-9\-]*")  # a code normalize_code() leaves unchanged
_CODE = re.compile(rb'"code"\s*:\s*"([^"\\]*)"')


def observation_codes(mappings: Mappings) -> frozenset[str] | None:
    """The normalised codes of every value set an Observation is selected by; None when one
    of them matches by prefix (then no line can be ruled out by exact codes)."""
    codes: set[str] = set()
    for name in OBSERVATION_CONCEPTS:
        valueset = mappings.vs(name)
        if valueset.prefixes:
            return None
        codes.update(code for _system, code in valueset.exact_pairs())
    return frozenset(codes)


def _may_matter(line: bytes, codes: frozenset[str]) -> bool:
    """False only when no `"code": "..."` in the line is one the rules select Observations by.

    The screener drops an Observation whose code is in none of its value sets before building
    anything (service/screening/extract.py), so such a line need not even be decoded. Codes
    are compared as the screener compares them (normalize_code); systems are not checked, which
    only lets more lines through.
    """
    for match in _CODE.finditer(line):
        code = match.group(1).decode()
        if code in codes or (not _PLAIN.fullmatch(code) and normalize_code(code) in codes):
            return True
    return False


def _patient_key(line: bytes, resource_type: bytes) -> str | None:
    """The patient id a line belongs to, from the raw bytes; None when it must be decoded."""
    if resource_type == b"Patient":
        return None  # its `id` may be preceded by nested ids: decode (one line per patient)
    match = _SUBJECT.search(line)
    if match is None:
        return None
    tail = type_and_id(match.group(1).decode())
    if tail is None or not tail.startswith("Patient/"):
        return None
    return tail.split("/", 1)[1]


def _decoded_key(resource: dict[str, Any]) -> str | None:
    if resource.get("resourceType") == "Patient":
        value = resource.get("id")
        return value if isinstance(value, str) else None
    for key in ("subject", "patient"):
        ref = (resource.get(key) or {}).get("reference")
        tail = type_and_id(ref) if isinstance(ref, str) else None
        if tail and tail.startswith("Patient/"):
            return tail.split("/", 1)[1]
    return None


def stream_records(
    folder: Path,
    scratch: Path,
    bucket_mb: float = 16.0,
    select: frozenset[str] | None = None,
) -> Iterator[PatientRecord]:
    """Every patient's PatientRecord, holding about one bucket of them in memory at a time.

    With `select` (observation_codes()), Observation lines that cannot matter are dropped
    undecoded in pass 1: the records then hold only the Observations the rules read, and the
    screen gives the same result.
    """
    files = sorted(folder.glob("*.ndjson"))
    total = sum(p.stat().st_size for p in files)
    buckets = max(1, int(total / (bucket_mb * 1e6)) + 1)
    handles: list[IO[bytes]] = [(scratch / f"b{i}.ndjson").open("wb") for i in range(buckets)]
    medications: dict[str, dict[str, Any]] = {}
    try:
        for path in files:
            with path.open("rb") as handle:
                for line in handle:
                    match = _TYPE.search(line)
                    if match is None or match.group(1) not in _KEPT:
                        continue  # blank, not a resource, or a type the rules never read
                    kind = match.group(1)
                    if (
                        select is not None
                        and kind == b"Observation"
                        and not _may_matter(line, select)
                    ):
                        continue
                    if match.group(1) == b"Medication":
                        medication = json.loads(line)
                        PatientRecord("", medications=medications).add_medication(medication)
                        continue
                    key = _patient_key(line, match.group(1))
                    if key is None:
                        key = _decoded_key(json.loads(line))
                        if key is None:
                            continue
                    bucket = zlib.crc32(key.encode()) % buckets
                    handles[bucket].write(line if line.endswith(b"\n") else line + b"\n")
    finally:
        for out in handles:
            out.close()
    for i in range(buckets):
        path = scratch / f"b{i}.ndjson"
        patients: dict[str, PatientRecord] = {}
        orphans: list[tuple[str, dict[str, Any]]] = []
        with path.open("rb") as handle:
            for line in handle:
                resource = json.loads(line)
                key = _decoded_key(resource)
                if key is None:
                    continue
                if resource.get("resourceType") == "Patient":
                    patients.setdefault(key, PatientRecord(key, medications=medications)).add(
                        resource
                    )
                else:
                    orphans.append((key, resource))
        for key, resource in orphans:
            if key in patients:
                patients[key].add(resource)
        path.unlink()
        yield from patients.values()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stream_prototype", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--bucket-mb", type=float, default=16.0)
    parser.add_argument("--as-of", type=date.fromisoformat, default=DEFAULT_AS_OF)
    parser.add_argument("--no-select", action="store_true", help="decode every Observation")
    args = parser.parse_args(argv)
    mappings = load_mappings()
    screener = Screener(mappings)
    select = None if args.no_select else observation_codes(mappings)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medcare-stream-") as scratch:
        count = 0
        for record in stream_records(args.source, Path(scratch), args.bucket_mb, select):
            screener.screen(record, args.as_of)
            count += 1
    print(json.dumps({"patients": count, "seconds": round(time.perf_counter() - started, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
