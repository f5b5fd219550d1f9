"""What the browser tests run against, all real: the OIDC peer (peers/oidc, npm oidc-provider),
`medcare-screen serve` (gunicorn) on SQLite holding the fixture patients' results (stored by
`medcare-screen screen`, as the README's quick start does), and Debian's Chromium driven
headless by Playwright. Nothing is skipped when a piece is missing: scripts/test.sh installs
Chromium and builds the peer; here a missing piece fails the test with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.servers import build, free_port, stop

REPO = Path(__file__).resolve().parents[2]
OIDC_DIR = REPO / "peers" / "oidc"
AXE = OIDC_DIR / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "docs" / "screenshots"
CLIENT_ID = "medcare-screen"
CLIENT_SECRET = "browser-test-client-secret-0123456789"
SESSION_SECRET = "browser-test-session-secret-0123456789abcdef"
TODAY = "2026-11-26"


@dataclass
class OidcPeer:
    issuer: str
    process: subprocess.Popen[bytes]


def start_oidc(redirect_uri: str, log_path: Path, timeout: float = 60) -> OidcPeer:
    """peers/oidc built and started on a free loopback port; ready when discovery answers."""
    build("oidc")
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MEDCARE_OIDC_CLIENT_ID": CLIENT_ID,
           "MEDCARE_OIDC_CLIENT_SECRET": CLIENT_SECRET}  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(OIDC_DIR / "run"), str(port), redirect_uri], env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"OIDC peer exited {process.returncode}:\n{log_path.read_text()}")
        try:
            if requests.get(f"{issuer}/.well-known/openid-configuration", timeout=2).ok:
                return OidcPeer(issuer, process)
        except requests.RequestException:
            pass
        time.sleep(0.2)
    stop(process)
    raise AssertionError(f"OIDC peer not ready in {timeout} s:\n{log_path.read_text()}")


def store_fixture_results(database_url: str) -> None:
    """`medcare-screen screen` over the fixture patients, results stored in `database_url`."""
    script = Path(sys.executable).with_name("medcare-screen")
    env = {**os.environ, "MEDCARE_DATABASE_URL": database_url, "MEDCARE_TODAY": TODAY}
    done = subprocess.run(
        [str(script), "screen", "--format", "json"], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr[-3000:]  # 1: some fixtures are invalid on purpose
    assert "stored" in done.stderr, done.stderr[-3000:]


def chromium_path() -> str:
    assert CHROMIUM.exists(), (
        "Chromium is missing: scripts/test.sh installs it (apt-get install chromium)"
    )
    return str(CHROMIUM)
