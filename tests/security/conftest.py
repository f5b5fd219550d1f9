"""Security tests share the reliability fixtures: the Medplum peer, the fault proxy, SQLite."""

from tests.reliability.conftest import (  # noqa: F401  (fixtures and the figures summary)
    medplum,
    proxy,
    pytest_terminal_summary,
    sqlite_url,
)
