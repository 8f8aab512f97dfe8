"""The calculation core's pure tests run without PostgreSQL, Redis or the factor files.

These tests use no database, so tests/conftest.py neither checks the services nor flushes the cache
for them: they pass with both services stopped, which is what they prove.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from calculator.units import convert

ROOT = Path(__file__).resolve().parents[2]


def test_this_module_is_pure(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("needs_services") is None


def test_units_convert_without_services() -> None:
    assert convert(Decimal("1"), "MWh", "kWh") == Decimal("1000")


def test_importing_units_loads_no_database_code() -> None:
    # A fresh interpreter: this one has Django and the app loaded by pytest-django.
    code = (
        "import json, sys; import calculator.units; print(json.dumps(sorted(m for m in sys.modules "
        "if m == 'django.db' or m.startswith('django.db.') or m.split('.')[0] in ('emissions', 'perf'))))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout) == []  # neither django.db nor the app's models, cache or metrics
