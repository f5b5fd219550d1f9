"""Incremental sweeps: ask the FHIR server what changed since the last sweep (issue 14 item 2).

Why sweeps when there are Subscriptions: many servers have none, and a notification can be
lost (the endpoint down, a redeploy, a full queue on the server). A sweep asks, for every
resource type the rules read (the read plan, by code for Observations as the plan searches
them) and for Patient itself, `GET {type}?_lastUpdated=gt{watermark - skew}`, follows the
pages, maps each resource to its patient, keeps the patients some cohort holds and queues them
for a re-screen (trigger 'sweep', source: the server's base URL). The queue coalesces, so a
patient changed by a notification and a sweep is screened once.

The watermark (service/store/watermarks.py) is on the server's clock: the newest
`meta.lastUpdated` seen, else the search Bundle's own `meta.lastUpdated`, never the service's
clock, so a difference between the two clocks cannot skip changes. The skew allowance asks a
little earlier than the mark for writes that became visible after the previous sweep read
past them; what the previous sweep of this process already queued in that overlap is not
queued again. A first sweep starts at now - skew: no backfill storm (a cohort's scheduled
re-screen covers the past). A type that fails keeps its mark and stores the cause; the other
types are swept all the same.

One screen per patient per sweep: the search is sorted by `_lastUpdated`, so a patient whose
changes are spread over time is named on several pages. Each page's patients are queued as
soon as the page is read (the mark moves with them, so a sweep cut short keeps what it did),
but held back (due `hold` ahead) so that no worker screens them while later pages name them
again; when the sweep of every type asked ends, well or not, the held rows are released (due
a coalescing delay from then); queued due at once, a patient was screened between pages and
again after a later page. A process that dies mid-sweep leaves its rows held until `hold`
passes: late, never lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from service.clock import Clock
from service.errors import safe_error
from service.fhir.http_parse import Resource, SearchParams
from service.fhir.record import is_fhir_id, patient_id_of
from service.read_plan import ReadPlan, TypeRead, token_list
from service.store import Store
from service.store.models import Trigger
from service.store.rescreen import DEFAULT_COALESCE
from service.store.watermarks import WatermarkInfo
from service.work.outage import DATABASE_DOWN

log = logging.getLogger("medcare_screen.currency.sweeps")

DEFAULT_SKEW: Final = timedelta(seconds=120)
SWEEP_PAGE: Final = 200  # resources per page of a sweep's search
PATIENT_FIELDS: Final = ("subject", "patient")  # where a clinical resource names its patient
# How long a sweep holds back what it queued; only a sweep whose process dies waits this long.
SWEEP_HOLD: Final = timedelta(minutes=15)


class SweepClient(Protocol):
    """What a sweep needs of FhirClient: its base URL and a search's first page."""

    base_url: str

    def search_pages(
        self, resource_type: str, params: SearchParams, patient: str | None = None
    ) -> tuple[Resource, Iterator[Resource]]: ...


@dataclass(frozen=True)
class TypeSweep:
    """One resource type's sweep: resources seen, patients they belong to that some cohort
    holds, how many of them got a new queue row, the watermark after it, the error if any."""

    resource_type: str
    seen: int = 0
    patients: int = 0
    enqueued: int = 0
    watermark: datetime | None = None
    error: str | None = None


def swept_reads(plan: ReadPlan) -> tuple[TypeRead, ...]:
    """Patient (a new birth date or sex changes a decision too) and every type of the plan."""
    reads = tuple(read for read in plan.reads if read.resource_type != "Patient")
    return (TypeRead("Patient"), *reads)


def fhir_instant(value: datetime) -> str:
    """'2026-11-26T09:30:00.000Z': a FHIR instant in UTC ('+' would need escaping in a URL)."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sweep_params(read: TypeRead, since: datetime, page_size: int = SWEEP_PAGE) -> SearchParams:
    """The search for what of `read`'s type changed after `since`, oldest change first (so
    the mark can move page by page)."""
    params = [("_lastUpdated", f"gt{fhir_instant(since)}")]
    if read.codes is not None:
        params.append(("code", token_list(read.codes)))
    return [*params, ("_sort", "_lastUpdated"), ("_count", str(page_size))]


def last_updated(resource: Resource) -> datetime | None:
    """A resource's (or a Bundle's) meta.lastUpdated as an aware time; None when absent or
    not an instant with a zone."""
    meta = resource.get("meta")
    text = meta.get("lastUpdated") if isinstance(meta, dict) else None
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value.astimezone(UTC) if value.utcoffset() is not None else None


def patient_of(resource: Resource) -> str | None:
    """The id of the patient a resource is about: a Patient's own id, else the Patient its
    `subject` or `patient` refers to; None for anything else (a Group, a Medication)."""
    if resource.get("resourceType") == "Patient":
        own = resource.get("id")
        return own if is_fhir_id(own) else None
    for name in PATIENT_FIELDS:
        field = resource.get(name)
        reference = field.get("reference") if isinstance(field, dict) else None
        found = patient_id_of(reference) if isinstance(reference, str) else None
        if found is not None and is_fhir_id(found):
            return found
    return None


def _version_key(resource: Resource) -> str:
    meta: Any = resource.get("meta") or {}
    version = meta.get("versionId") or meta.get("lastUpdated") if isinstance(meta, dict) else None
    return f"{resource.get('id')}|{version}"


class Sweeper:
    """Sweeps the read plan's types on one FHIR server into the re-screen queue. Thread-safe
    enough for one scheduler: `sweep` holds a lock while it runs."""

    def __init__(
        self,
        store: Store,
        client: SweepClient,
        plan: ReadPlan,
        *,
        clock: Clock,
        skew: timedelta = DEFAULT_SKEW,
        page_size: int = SWEEP_PAGE,
        delay: timedelta = DEFAULT_COALESCE,
        hold: timedelta = SWEEP_HOLD,
    ) -> None:
        self.store = store
        self.client = client
        self.reads = swept_reads(plan)
        self.clock = clock
        self.skew = skew
        self.page_size = page_size
        self.delay = delay
        self.hold = hold
        self._lock = threading.Lock()
        # per type, versions queued by this process that a later sweep's overlap sees again
        self._queued: dict[str, dict[str, datetime]] = {}

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(read.resource_type for read in self.reads)

    def sweep(self, types: Iterable[str] | None = None) -> list[TypeSweep]:
        """Sweep every type (or those of `types` the plan reads), each on its own: one that
        fails is stored as failed and the others are swept all the same. The patients queued
        are held until the last type is swept, then released: one screen each."""
        wanted = set(types) if types is not None else None
        held: set[str] = set()
        with self._lock:
            try:
                return [
                    self._sweep_type(read, held)
                    for read in self.reads
                    if wanted is None or read.resource_type in wanted
                ]
            finally:
                self._release(held)

    def _release(self, held: set[str]) -> None:
        """Make the patients this sweep held due; when the database is down they come due by
        themselves when the hold ends."""
        if not held:
            return
        try:
            self.store.release_rescreens(held, delay=self.delay)
        except DATABASE_DOWN as exc:
            log.warning("sweep: %d queued patients not released, due in %s (%s)", len(held),
                        self.hold, type(exc).__name__)  # fmt: skip

    def _sweep_type(self, read: TypeRead, held: set[str]) -> TypeSweep:
        resource_type = read.resource_type
        mark = self.store.watermark(resource_type)
        try:
            return self._sweep(read, mark, held)
        except DATABASE_DOWN as exc:
            log.warning("sweep of %s: the database is unavailable (%s)", resource_type,
                        type(exc).__name__)  # fmt: skip
            return TypeSweep(resource_type, error=type(exc).__name__)
        except Exception as exc:  # one type's failure must not stop the others
            error = safe_error(exc)
            log.warning("sweep of %s failed (%s)", resource_type, type(exc).__name__)
            try:
                self.store.watermark_failed(resource_type, error)
            except DATABASE_DOWN:
                log.warning("sweep of %s: its failure not stored", resource_type)
            return TypeSweep(resource_type, error=error)

    def _sweep(self, read: TypeRead, mark: WatermarkInfo | None, held: set[str]) -> TypeSweep:
        resource_type = read.resource_type
        start = mark.last_updated if mark is not None and mark.last_updated else None
        since = (start or self.clock.now()) - self.skew
        bundle, found = self.client.search_pages(
            resource_type, sweep_params(read, since, self.page_size)
        )
        queued = {key: at for key, at in self._queued.get(resource_type, {}).items() if at > since}
        self._queued[resource_type] = queued
        progress = _Progress(held=held)
        for resource in found:
            if resource.get("resourceType") != resource_type:
                continue  # an included resource
            progress.note(resource, queued)
            if progress.seen % self.page_size == 0:  # a page: keep what it found
                self._flush(resource_type, progress, queued)
        self._flush(resource_type, progress, queued)
        # the server's clock: the newest change, else the time the server answered; a server
        # that says neither leaves the mark where it was (a first sweep: where it asked from)
        moved_to = progress.newest or last_updated(bundle) or start or since
        info = self.store.advance_watermark(resource_type, moved_to)
        if progress.seen:
            log.info("sweep of %s: %d changed, %d patients queued (%d new)", resource_type,
                     progress.seen, progress.patients, progress.enqueued)  # fmt: skip
        return TypeSweep(resource_type, progress.seen, progress.patients, progress.enqueued,
                         info.last_updated)  # fmt: skip

    def _flush(self, resource_type: str, progress: _Progress, queued: dict[str, datetime]) -> None:
        """Queue the population's patients seen since the last flush, held (see the module
        docstring), and move the mark to the newest change seen (the search is sorted by
        _lastUpdated): a sweep cut short by an error keeps what it did."""
        ours = sorted(self.store.in_population_of(progress.pending)) if progress.pending else []
        if ours:
            progress.held.update(ours)
            progress.enqueued += self.store.enqueue(
                ours, Trigger.SWEEP.value, self.client.base_url, delay=self.hold
            )
        progress.patients += len(ours)
        queued.update(progress.fresh)
        progress.pending, progress.fresh = set(), {}
        if progress.newest is not None:
            self.store.advance_watermark(resource_type, progress.newest)


@dataclass
class _Progress:
    """What one type's sweep saw so far: counts, the newest change, the patients and versions
    not yet queued, and (shared by the types of one sweep) the patients it holds."""

    seen: int = 0
    patients: int = 0
    enqueued: int = 0
    newest: datetime | None = None
    pending: set[str] = field(default_factory=set)
    fresh: dict[str, datetime] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)

    def note(self, resource: Resource, queued: dict[str, datetime]) -> None:
        self.seen += 1
        stamp = last_updated(resource)
        if stamp is not None and (self.newest is None or stamp > self.newest):
            self.newest = stamp
        key = _version_key(resource)
        patient = patient_of(resource)
        if key in queued or patient is None:
            return  # this process queued that version already, or it is nobody's
        self.pending.add(patient)
        if stamp is not None:
            self.fresh[key] = stamp
