"""Fixtures shared by the API tests (the published-value factors live in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test.utils import override_settings

from emissions.models import EmissionFactor
from emissions.services.factors import factor_dataset_import
from tests.emissions.api.payloads import FREIGHT_ACTIVITY
from tests.factories import EmissionFactorFactory, FactorDatasetFactory


@pytest.fixture
def freight_factor() -> EmissionFactor:
    """DESNZ 2025 rigid HGV (>17 t), average laden: 0.17146 kg CO2e per tonne.km."""
    dataset = FactorDatasetFactory.create(source="desnz", version="2025", basis_year=2025)
    return EmissionFactorFactory.create(
        dataset=dataset,
        activity=FREIGHT_ACTIVITY,
        name="HGV (all diesel) / Rigid (>17 tonnes) / Average laden",
        unit="t*km",
        unit_label="tonne.km",
        co2e_per_unit=Decimal("0.17146"),
    )


@pytest.fixture
def hub_imported() -> None:
    """The IPCC GWP tables and the EPA Hub 2024, imported from the publishers' files as ``import_factors`` does."""
    for source in ("ipcc_gwp", "epa_hub"):
        factor_dataset_import(source=source, directory=Path(settings.FACTOR_DATA_DIR))


@pytest.fixture
def rows_and_drf(api: Any) -> Callable[..., tuple[Any, Any]]:
    """``get(url, params)``: the list's response as served (pages written from value rows, ``perf.rows``) and as
    DRF's serializer and renderer write it, both uncached; tests compare them byte for byte, headers included."""

    def get(url: str, params: dict[str, Any] | None = None, **headers: Any) -> tuple[Any, Any]:
        # The same request id for both: each response echoes its request's (X-Request-ID, emissions.audit).
        headers.setdefault("HTTP_X_REQUEST_ID", "rows-and-drf")
        with override_settings(CACHE_ENABLED=False):
            served = api.get(url, params, HTTP_ACCEPT="application/json", **headers)
            with override_settings(LIST_ROWS=False):
                drf = api.get(url, params, HTTP_ACCEPT="application/json", **headers)
        assert served.status_code == drf.status_code == 200
        return served, drf

    return get
