"""perf.codec: exact round trips, and model rows rebuilt without a query."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from emissions.models import EmissionFactor, FactorDataset
from perf.codec import model_from_row, model_row, pack, unpack
from tests.factories import EmissionFactorFactory


def test_decimals_dates_and_datetimes_round_trip_exactly() -> None:
    value = {
        "kg": Decimal("0.177000000000000"),
        "big": Decimal("123456789012345678.123456"),
        "day": dt.date(2025, 1, 31),
        "at": dt.datetime(2025, 1, 31, 12, 30, 1, 123456, tzinfo=dt.UTC),
        "rows": [[1, "a", None, True]],
        "body": b"\x00bytes",
    }
    back = unpack(pack(value))
    assert back == value
    assert str(back["kg"]) == "0.177000000000000"  # the exponent survives, not just the value
    assert back["at"].tzinfo is not None


def test_an_unknown_type_is_refused_rather_than_guessed() -> None:
    with pytest.raises(TypeError, match="set"):
        pack({1, 2})


@pytest.mark.django_db
def test_model_rows_rebuild_an_instance_without_a_query(django_assert_num_queries) -> None:
    factor = EmissionFactor.objects.select_related("dataset").get(pk=EmissionFactorFactory.create().pk)
    rows = unpack(pack([model_row(factor), model_row(factor.dataset)]))
    with django_assert_num_queries(0):
        rebuilt = model_from_row(EmissionFactor, rows[0])
        rebuilt.dataset = model_from_row(FactorDataset, rows[1])
        assert rebuilt == factor
        assert rebuilt.co2e_per_unit == factor.co2e_per_unit
        assert rebuilt.gases == factor.gases
        assert rebuilt.dataset.imported_at == factor.dataset.imported_at
        assert not rebuilt._state.adding


@pytest.mark.django_db
def test_a_partial_row_defers_the_rest(django_assert_num_queries) -> None:
    factor = EmissionFactorFactory.create()
    rebuilt = model_from_row(EmissionFactor, model_row(factor, ["id", "activity"]), ["id", "activity"])
    assert rebuilt.get_deferred_fields() >= {"name", "co2e_per_unit"}
    with django_assert_num_queries(1):  # loaded on access, never silently empty
        assert rebuilt.name == factor.name
