"""Load suite (first cut): an analyst browsing emissions and summaries.

Run against a seeded server: ``VCCI_TOKEN=<token> locust -f locustfile.py --host http://127.0.0.1:8000``.
The full weighted multi-scenario suite lands with the serving/observability work.
"""

from __future__ import annotations

import os

from locust import FastHttpUser, between, task


class Analyst(FastHttpUser):
    wait_time = between(0.5, 2)
    auth: dict[str, str]

    def on_start(self) -> None:
        token = os.environ.get("VCCI_TOKEN", "")
        if not token:
            raise RuntimeError("Set VCCI_TOKEN to an API token (make run prints one).")
        self.auth = {"Authorization": f"Token {token}"}

    @task(3)
    def emissions_first_page(self) -> None:
        self.client.get("/api/v1/emissions/?limit=100", name="/api/v1/emissions/", headers=self.auth)

    @task(1)
    def summary_by_category(self) -> None:
        self.client.get(
            "/api/v1/emissions/summary/?group_by=category", name="/api/v1/emissions/summary/", headers=self.auth
        )
