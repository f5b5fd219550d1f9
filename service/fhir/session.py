"""The `requests` session a FHIR client talks through: pooled, with our headers and TLS choice.

Kept apart from the exchanges (transport.py) because it is set up once, from settings, and is
where a deployment's choices show: the pool fits a screen's concurrent searches, `requests`
retries nothing on its own (transport.py does, by policy), and verification off is never silent.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final

import requests
from requests.adapters import HTTPAdapter

from service import __version__
from service.config import ConfigError
from service.fhir.deadline import install as watch_deadlines
from service.fhir.limits import ACCEPTED_ENCODINGS

log = logging.getLogger(__name__)

USER_AGENT: Final = f"medcare-screen/{__version__}"
FHIR_JSON: Final = "application/fhir+json"


def fhir_session(
    session: requests.Session | None, pool_size: int, user_agent: str
) -> requests.Session:
    """`session` (a test's) or a new pooled one, asking for FHIR JSON as this client reads it."""
    session = session if session is not None else _pooled_session(pool_size)
    # no-cache: a screen must see what was written a moment ago (HAPI otherwise reuses a
    # search's results for 60 s, even across new writes)
    # Accept-Encoding: only what limits.py decompresses with a bound
    session.headers.update(
        {
            "Accept": FHIR_JSON,
            "User-Agent": user_agent,
            "Cache-Control": "no-cache",
            "Accept-Encoding": ACCEPTED_ENCODINGS,
        }
    )
    return session


def tls_verify(verify: bool | str | os.PathLike[str], base_url: str) -> bool | str:
    """True, a CA bundle that exists, or False: allowed (Settings permits it in development
    mode only) but never silent: every client made that way says so in the log."""
    if verify is True:
        return True
    if verify is False:
        log.warning("TLS certificate verification is OFF for %s: development only", base_url)
        return False
    path = Path(verify)
    if not path.is_file():
        raise ConfigError(f"MEDCARE_TLS_CA_BUNDLE: the CA bundle {path} is not a file")
    return str(path)


def _pooled_session(pool_size: int) -> requests.Session:
    """A session whose connection pool fits the concurrent searches of a screen."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    watch_deadlines(adapter)  # a total deadline per exchange, headers included (deadline.py)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
