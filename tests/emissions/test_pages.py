"""emissions.pages: the landing page at / (and the admin's name)."""

from __future__ import annotations

import pytest

from tests.helpers import Client

pytestmark = pytest.mark.django_db


def test_the_landing_page_says_what_vcci_is_and_links_where_to_go(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "<h1>VCCI</h1>" in page and "Value Chain Carbon Intelligence" in page
    for href in ("/admin/", "/api/docs/", "/api/redoc/", "/api/schema/", "/healthz", "/readyz"):
        assert f'href="{href}"' in page, href
    assert "/api/v1/reports/inventory/?year=" in page
    assert "Content-Security-Policy" in response  # the site's policy applies here too


def test_the_admin_is_vccis(client: Client) -> None:
    assert "VCCI administration" in client.get("/admin/login/").content.decode()


def test_another_path_is_still_a_404(client: Client) -> None:
    assert client.get("/nothing-here").status_code == 404
