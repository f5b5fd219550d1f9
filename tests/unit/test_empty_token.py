"""The service refuses the SHA-256 of the empty token (issue 14 item 7: the README's production
example hashed an unset variable and the service then let in `Authorization: Bearer `)."""

from __future__ import annotations

import hashlib

import pytest

from service.settings import ConfigError, Settings
from service.settings.environment import settings_from_env

EMPTY = hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("entry", [EMPTY, f"{EMPTY}:medcare.read", EMPTY.upper()])
def test_the_digest_of_an_empty_token_stops_the_start(entry: str) -> None:
    env = {"MEDCARE_API_TOKEN_SHA256": f"{hashlib.sha256(b'a-real-token').hexdigest()},{entry}"}
    with pytest.raises(ConfigError, match="EMPTY token") as raised:
        settings_from_env(env).check()
    assert EMPTY not in str(raised.value)


def test_a_real_token_digest_is_accepted() -> None:
    Settings(api_token_hashes=(hashlib.sha256(b"a-real-token").hexdigest(),)).check()
