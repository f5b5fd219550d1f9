"""Load a generated population into a FHIR server: one transaction per patient, a few in parallel.

    python -m bench.load --base http://127.0.0.1:8080/fhir --source DIR   (a --format bundles DIR)
    python -m bench.load --base URL --n 200 --seed 1                      (generate on the fly)

Why a transaction per patient: it is all or nothing, so a patient is either fully there or
absent (a half-loaded patient would skew every figure), and its PUTs with client ids make a
reload idempotent. Why only a few in parallel: the peers serialise writes (H2 in HAPI, one
request at a time in Medplum), so more workers only queue; 3 keeps a request in flight while
the client builds the next body. The server validates every resource: a failure stops the load
with the server's OperationOutcome, naming the patient.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import IO, Any

import requests
from requests.adapters import HTTPAdapter

from bench import command_line
from bench.generate import DEFAULT_AS_OF, Mix, population, transaction_bundle

FHIR_JSON = "application/fhir+json"
RETRIED_STATUSES = {409, 429, 500, 502, 503, 504}
ATTEMPTS = 4
TIMEOUT_S = 300.0


class LoadError(RuntimeError):
    """The server refused a patient's transaction; the message quotes its OperationOutcome."""


@dataclass
class LoadStats:
    patients: int = 0
    resources: int = 0
    seconds: float = 0.0

    @property
    def resources_per_s(self) -> float:
        return self.resources / self.seconds if self.seconds else 0.0


def bundles_from_dir(folder: Path) -> Iterator[tuple[str, bytes, int]]:
    """(patient id, body, resource count) of each Bundle file written by `--format bundles`."""
    for path in sorted(folder.glob("*.json")):
        body = path.read_bytes()
        count = body.count(b'"request":')
        yield path.stem, body, count


def bundles_generated(
    n: int, seed: int, as_of: date = DEFAULT_AS_OF, mix: Mix | None = None
) -> Iterator[tuple[str, bytes, int]]:
    """The same Bundles, generated in memory one at a time (no files needed)."""
    for resources in population(n, seed, as_of, mix):
        body = json.dumps(transaction_bundle(resources), separators=(",", ":")).encode()
        yield resources[0]["id"], body, len(resources)


def post_transaction(
    session: requests.Session, base_url: str, patient_id: str, body: bytes
) -> None:
    """POST one transaction, retrying what a busy server may answer (409 on HAPI lock races)."""
    problem = ""
    for attempt in range(ATTEMPTS):
        try:
            response = session.post(
                base_url,
                data=body,
                headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
                timeout=TIMEOUT_S,
            )
        except requests.RequestException as exc:
            problem = f"{type(exc).__name__}: {str(exc)[:200]}"
        else:
            if response.status_code == 200:
                return
            problem = f"HTTP {response.status_code}: {_outcome_text(response)}"
            if response.status_code not in RETRIED_STATUSES:
                break
        time.sleep(0.5 * 2**attempt)
    raise LoadError(f"Patient/{patient_id}: transaction refused ({problem})")


def _outcome_text(response: requests.Response) -> str:
    try:
        outcome: Any = response.json()
    except ValueError:
        return response.text[:300]
    issues = outcome.get("issue") if isinstance(outcome, dict) else None
    issues = [issue for issue in issues or [] if isinstance(issue, dict)]
    # a validating server lists warnings too: the errors are what refused the write
    errors = [i for i in issues if i.get("severity") in ("error", "fatal")] or issues
    texts = [
        f"{issue.get('diagnostics') or (issue.get('details') or {}).get('text') or issue}"
        + (f" at {issue['location'][0]}" if issue.get("location") else "")
        for issue in errors
    ]
    return "; ".join(texts)[:600] or response.text[:300]


def load(
    base_url: str,
    bundles: Iterable[tuple[str, bytes, int]],
    workers: int = 3,
    total: int | None = None,
    progress: IO[str] | None = None,
) -> LoadStats:
    """Send every Bundle; at most `workers` in flight. Stops at the first refused patient."""
    stats = LoadStats()
    started = time.perf_counter()
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=workers)
    session.mount("http://", adapter)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: set[Future[int]] = set()

        def collect(done: set[Future[int]]) -> None:
            for future in done:
                stats.resources += future.result()
                stats.patients += 1
            if progress is not None:
                elapsed = time.perf_counter() - started
                of = f"/{total}" if total else ""
                progress.write(
                    f"\rload: {stats.patients}{of} patients, {stats.resources} resources, "
                    f"{stats.resources / max(elapsed, 1e-9):.0f} resources/s   "
                )
                progress.flush()

        def send(patient_id: str, body: bytes, count: int) -> int:
            post_transaction(session, base_url, patient_id, body)
            return count

        for patient_id, body, count in bundles:
            if len(pending) >= workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                collect(done)
            pending.add(pool.submit(send, patient_id, body, count))
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            collect(done)
    stats.seconds = time.perf_counter() - started
    if progress is not None:
        progress.write("\n")
    session.close()
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = command_line("bench.load", __doc__)
    parser.add_argument(
        "--base", required=True, help="FHIR base URL, e.g. http://127.0.0.1:8080/fhir"
    )
    parser.add_argument(
        "--source", type=Path, help="a folder written by bench.generate --format bundles"
    )
    parser.add_argument("--n", type=int, help="generate this many patients on the fly instead")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args(argv)
    if (args.source is None) == (args.n is None):
        parser.error("give exactly one of --source and --n")
    if args.source is not None:
        total = len(list(args.source.glob("*.json")))
        bundles = bundles_from_dir(args.source)
    else:
        total = args.n
        bundles = bundles_generated(args.n, args.seed, mix=Mix(noise=args.noise))
    try:
        stats = load(args.base.rstrip("/"), bundles, args.workers, total, sys.stderr)
    except LoadError as exc:
        print(f"\nload: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"load: {stats.patients} patients, {stats.resources} resources in {stats.seconds:.1f} s "
        f"({stats.resources_per_s:.0f} resources/s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
