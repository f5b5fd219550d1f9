"""Locust clients of the load test: an integration engine and dashboards on the HTTP API.

Run by tests/reliability/test_load.py (headless, bounded in time); settings from the
environment: MEDCARE_LOAD_TOKEN, MEDCARE_LOAD_PATIENTS (comma separated fixture ids).
"""

from __future__ import annotations

import os
import random

from locust import HttpUser, between, task

TOKEN = os.environ["MEDCARE_LOAD_TOKEN"]
PATIENTS = os.environ["MEDCARE_LOAD_PATIENTS"].split(",")


class Client(HttpUser):
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        self.client.headers["Authorization"] = f"Bearer {TOKEN}"
        self.runs: list[str] = []
        self.cursor: str | None = None

    @task(4)
    def screen(self) -> None:
        patient = random.choice(PATIENTS)
        self.client.post("/v1/screen", json={"patient": patient, "as_of": "2026-11-26"},
                         name="POST /v1/screen")  # fmt: skip

    @task(3)
    def latest(self) -> None:
        patient = random.choice(PATIENTS)
        with self.client.get(f"/v1/patients/{patient}/result", name="GET /v1/patients/[id]/result",
                             catch_response=True) as response:  # fmt: skip
            if response.status_code in (200, 404):  # 404: not screened yet, a valid answer
                response.success()

    @task(2)
    def changes(self) -> None:
        params = {"limit": 50, **({"cursor": self.cursor} if self.cursor else {})}
        response = self.client.get("/v1/changes", params=params, name="GET /v1/changes")
        if response.ok:
            self.cursor = response.json()["next_cursor"]

    @task(1)
    def start_run(self) -> None:
        body = {"patients": random.sample(PATIENTS, 3), "as_of": "2026-11-26"}
        response = self.client.post("/v1/runs", json=body, name="POST /v1/runs")
        if response.status_code == 202:
            self.runs.append(response.json()["id"])

    @task(2)
    def poll_run(self) -> None:
        if self.runs:
            self.client.get(f"/v1/runs/{random.choice(self.runs)}", name="GET /v1/runs/[id]")

    @task(1)
    def ready(self) -> None:
        self.client.get("/health/ready", name="GET /health/ready")
