"""Production settings: ``manage.py check --deploy`` is clean with the README's production environment, and the
Content-Security-Policy lets the admin, Swagger UI and ReDoc pages load what they need and nothing inline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import vcci
from tests.vcci.test_settings import load_settings  # noqa: F401  (fixture)

ROOT = Path(vcci.__file__).resolve().parent.parent
README = ROOT / "README.md"
# A long random-looking key: check --deploy also warns on a short or guessable SECRET_KEY.
PRODUCTION_SECRET_KEY = "t8H2vQ-x9LrM3wZc7Ks1NbYp4JdGf6UeAq0VhTi5OlRnCmWzXyBsEkDjFuPaIo_g"


def readme_production_env() -> dict[str, str]:
    """The ``VAR=value`` lines of the README's "Production settings" example."""
    text = README.read_text()
    section = text.split("## Production settings", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    pairs = (line.split("=", 1) for line in block.splitlines() if re.match(r"^[A-Z_]+=", line))
    return {name: value.strip().strip("'\"") for name, value in pairs}


def test_check_deploy_is_clean_with_the_documented_production_settings(tmp_path):
    env = readme_production_env()
    assert {"SECURE_HSTS_SECONDS", "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE"} <= set(env)
    # collectstatic's manifest, which the project's own deployment check looks for (perf.checks).
    static_root = tmp_path / "static"
    static_root.mkdir()
    (static_root / "staticfiles.json").write_text(json.dumps({"paths": {}, "version": "1.1", "hash": ""}))
    inherited = {key: value for key, value in os.environ.items() if not key.startswith(("SECURE_", "DJANGO_"))}
    process = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={
            **inherited,
            "DJANGO_SETTINGS_MODULE": "vcci.settings",
            "STATIC_ROOT": str(static_root),
            **env,
            # The README's is a placeholder.
            "SECRET_KEY": PRODUCTION_SECRET_KEY,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stdout + process.stderr
    assert "no issues" in process.stdout


def test_the_production_settings_are_read_from_the_environment(load_settings):  # noqa: F811
    module = load_settings(**readme_production_env())
    assert module.SECURE_HSTS_SECONDS == 31536000
    assert module.SECURE_HSTS_INCLUDE_SUBDOMAINS and module.SECURE_HSTS_PRELOAD and module.SECURE_SSL_REDIRECT
    assert module.SECURE_PROXY_SSL_HEADER == ("HTTP_X_FORWARDED_PROTO", "https")
    assert module.SESSION_COOKIE_SECURE and module.CSRF_COOKIE_SECURE


def test_a_malformed_proxy_ssl_header_is_refused(load_settings):  # noqa: F811
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="SECURE_PROXY_SSL_HEADER"):
        load_settings(SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto")


# -- Content-Security-Policy -------------------------------------------------------------------

SCRIPT_TAG = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.S)


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    directives = (part.strip().split() for part in header.split(";") if part.strip())
    return {name: values for name, *values in directives}


def inline_scripts(html: str) -> list[str]:
    return [body for attributes, body in SCRIPT_TAG.findall(html) if "src=" not in attributes and body.strip()]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/admin/login/", "/api/docs/", "/api/redoc/"])
def test_pages_have_a_policy_without_inline_scripts_and_need_none(client, path):
    response = client.get(path)
    assert response.status_code == 200
    directives = policy(response)
    assert directives["script-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"] and directives["object-src"] == ["'none'"]
    assert inline_scripts(response.content.decode()) == []


@pytest.mark.django_db
def test_swagger_ui_loads_its_start_up_script_from_this_origin(client):
    page = client.get("/api/docs/").content.decode()
    sources = re.findall(r'<script[^>]*\bsrc="([^"]+)"', page)
    assert all(src.startswith("/") and not src.startswith("//") for src in sources), sources
    start_up = [src for src in sources if "script" in src.split("?", 1)[-1]]
    assert len(start_up) == 1
    script = client.get(start_up[0])
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()


@pytest.mark.django_db
def test_redoc_may_load_the_fonts_its_page_links(client):
    directives = policy(client.get("/api/redoc/"))
    assert "https://fonts.googleapis.com" in directives["style-src"]
    assert "https://fonts.gstatic.com" in directives["font-src"]
    assert "blob:" in directives["worker-src"]
