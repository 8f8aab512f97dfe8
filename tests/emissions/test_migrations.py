"""emissions/migrations: every migration applies, and unapplies, on the embedded SQLite default too.

The tests run on PostgreSQL; a migration that only PostgreSQL can run (a table rebuild re-creating a
trigram index, say) would break the README's first run without failing any other test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings


def _manage(*args: str, database: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "vcci.settings",
        "DATABASE_URL": f"sqlite:///{database}",
        "REDIS_URL": "",
        "SECRET_KEY": "migrations-test",
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args, "--no-input"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_embedded_default_migrates_forwards_and_back(tmp_path: Path) -> None:
    database = tmp_path / "first-run.sqlite3"
    forwards = _manage("migrate", database=database)
    assert forwards.returncode == 0, forwards.stderr
    assert "Applying emissions.0005_summary_index_biogenic... OK" in forwards.stdout
    backwards = _manage("migrate", "emissions", "0003", database=database)
    assert backwards.returncode == 0, backwards.stderr
    assert "Unapplying emissions.0004_biogenic_co2... OK" in backwards.stdout
    again = _manage("migrate", database=database)
    assert again.returncode == 0, again.stderr
