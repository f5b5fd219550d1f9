"""The service's background work, each kind in a room of its own.

- `runs`: run execution (claim patients, screen, record, heartbeat, complete or fail);
- `outbox`: the write-back outbox (write now, or later with backoff);
- `outage`: riding out database outages (what "the database is away" is, waiting for it).

service.runtime puts them together behind the `Runtime` facade that the API and the CLI use.
"""
