"""Persistence of screening runs and results: SQLite by default, PostgreSQL by URL.

    store = create_store(url)   # None: the SQLite file of DEFAULT_URL
    store.migrate()             # Alembic upgrade head, at every start-up
    store.interrupted_runs()    # runs to resume after a restart

Modules: `models` (the tables), `migrations/` (Alembic, configured in code), `engine`
(engine set-up per database), `cursors` (opaque paging cursors), `repository` (the Store and
`create_store`), and the Store's concerns over `base` (sessions, clock, owner): `runs`,
`claims` (a run's patients as a work queue), `results` (and the changes feed, over `latest`),
`outbox`, `reports`, `schema`; `queue` (the one lease mechanism both queues use), `leases`
(owner ids), `errors` and `types` (what the store hands back).
"""

# The public names are listed once, in repository.__all__ (the Store, what it hands back, its
# errors, the engine's defaults); this package re-exports exactly those.
from service.store.repository import *  # noqa: F403
