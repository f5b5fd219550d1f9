"""The composition root: settings in, the service's parts out.

Why one place: the CLI, the HTTP service (service/runtime.py) and the benchmarks used to build
the FHIR client, the source, the engine and the store each their own way, and the CLI's client
ignored MEDCARE_TLS_VERIFY and the HTTP pool size. Every part is now built here from one
`Settings` (service/settings), so a setting reaches every entry point or none.

Nothing here runs anything: building a part opens at most a connection pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from service.clock import Clock
from service.fhir.auth import auth_from_settings
from service.fhir.client import FhirClient
from service.fhir.local_source import LocalSource
from service.fhir.ndjson_stream import NdjsonStream
from service.fhir.server_source import ServerSource
from service.mapping import Mappings, load_mappings
from service.screening.engine import Screener
from service.screening.prefilter import line_filter
from service.settings import Settings
from service.store import Store, create_store
from service.writeback.writer import ResultWriter


def make_clock(settings: Settings) -> Clock:
    """The one clock: system time, with today pinned by MEDCARE_TODAY when set."""
    return Clock(pinned_today=settings.store.today)


def make_screener(settings: Settings) -> Screener:
    """The engine over the mappings of MEDCARE_MAPPINGS_DIR (default: the bundled mappings/)."""
    return Screener(load_mappings(settings.screening.mappings_dir))


def make_client(settings: Settings) -> FhirClient | None:
    """The FHIR client of MEDCARE_FHIR_BASE_URL (None: no server), with its authentication,
    TLS trust (CA bundle, or verification off in development), pool, batch mode and limits."""
    fhir = settings.fhir
    if not fhir.base_url:
        return None
    return FhirClient(
        fhir.base_url,
        auth_from_settings(fhir.auth),
        verify=fhir.verify,
        pool_size=fhir.pool_size,
        batch=fhir.batch,
        max_answer_bytes=fhir.max_answer_bytes,
        deadline_s=fhir.deadline_s,
    )


def make_source(
    settings: Settings, mappings: Mappings, client: FhirClient | None
) -> LocalSource | NdjsonStream | ServerSource:
    """The patients screened: the FHIR server when there is one, else the files of
    MEDCARE_SOURCE_PATH (Bulk Data NDJSON streamed with the read plan's line filter, or
    Bundles)."""
    if client is not None:
        return ServerSource(client, mappings)
    path: Path = settings.screening.source_path
    if NdjsonStream.handles(path):
        return NdjsonStream(path, line_filter(mappings))
    return LocalSource(path)


def make_writer(
    settings: Settings, mappings: Mappings, client: FhirClient | None
) -> ResultWriter | None:
    """The write-back of results (ResearchSubject + Provenance); None without a server."""
    if client is None:
        return None
    return ResultWriter(
        client, mappings.parameters, write_ineligible=settings.screening.write_ineligible
    )


def make_store(settings: Settings, *, migrate: bool = True) -> Store:
    """The results database, migrated to the current schema unless `migrate` is False."""
    store = create_store(
        settings.store.database_url.get_secret_value(),
        pool_size=settings.store.pool_size,
        today=settings.store.today,
        claim_lease=timedelta(seconds=settings.store.claim_lease_s),
    )
    if migrate:
        store.migrate()
    return store


@dataclass(frozen=True)
class Parts:
    """What a screen needs, built once from Settings (the store is opened separately: the
    CLI may screen without one, and tests hand the service their own)."""

    settings: Settings
    clock: Clock
    mappings: Mappings
    screener: Screener
    client: FhirClient | None
    source: LocalSource | NdjsonStream | ServerSource
    writer: ResultWriter | None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def compose(settings: Settings) -> Parts:
    """Every part but the store, from `settings`."""
    screener = make_screener(settings)
    mappings = screener.mappings
    client = make_client(settings)
    return Parts(
        settings=settings,
        clock=make_clock(settings),
        mappings=mappings,
        screener=screener,
        client=client,
        source=make_source(settings, mappings, client),
        writer=make_writer(settings, mappings, client),
    )
