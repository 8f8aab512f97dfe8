"""calculator.quality: the rule table for the five GHG Protocol indicators and the warnings."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from calculator.quality import assess, time_score
from calculator.types import Dataset, Factor, Note
from tests.calculator.helpers import make_input


def unsaved_factor(**kwargs: Any) -> Factor:
    values: dict[str, Any] = {
        "activity": "t:1",
        "region": "GB",
        "year": 2025,
        "unit": "kWh",
        "co2e_per_unit": Decimal("1"),
    }
    values.update(kwargs)
    return Factor(pk=1, dataset=Dataset(pk=1, source="desnz", version="2025", basis_year=2025), **values)


@pytest.mark.parametrize(
    ("basis", "reliability", "technology", "completeness"),
    [
        ("supplier_specific", 1, 1, 2),
        ("activity", 2, 2, 2),
        ("distance", 2, 3, 2),
        ("spend", 4, 4, 3),
    ],
)
def test_method_scores(basis, reliability, technology, completeness):
    quality = assess(make_input(region="GB", year=2025), unsaved_factor(), basis=basis, fallbacks=[]).quality
    assert (quality.reliability, quality.technology, quality.completeness) == (reliability, technology, completeness)


@pytest.mark.parametrize(
    ("factor_region", "inp_region", "fallbacks", "expected"),
    [
        ("GB", "GB", [], 1),
        ("GB", "", [], 2),
        ("GLOBAL", "", [Note("region_unspecified", "")], 3),
        ("GLOBAL", "FR", [Note("region_fallback", "")], 4),
        ("US", "FR", [Note("region_fallback", "")], 5),
    ],
)
def test_geography(factor_region, inp_region, fallbacks, expected):
    factor = unsaved_factor(region=factor_region)
    quality = assess(make_input(region=inp_region), factor, basis="activity", fallbacks=fallbacks).quality
    assert quality.geography == expected


def test_supplier_factor_geography_is_specific():
    quality = assess(make_input(region=""), unsaved_factor(region="US"), basis="supplier_specific", fallbacks=[])
    assert quality.quality.geography == 1


@pytest.mark.parametrize(
    ("age", "fallback", "expected"),
    [
        (0, False, 1),
        (1, False, 1),
        (2, False, 2),
        (3, False, 2),
        (4, False, 3),
        (6, False, 3),
        (7, False, 4),
        (10, False, 4),
        (11, False, 5),
        (30, False, 5),
        (0, True, 2),
        (10, True, 5),
        (11, True, 5),
    ],
)
def test_time_bands(age, fallback, expected):
    assert time_score(age, year_fallback=fallback) == expected


def test_time_uses_inp_year_then_spend_year_then_factor_year():
    factor = unsaved_factor(year=2020)
    by_year = assess(make_input(year=2030, spend_year=2020), factor, basis="spend", fallbacks=[]).quality
    by_spend_year = assess(make_input(spend_year=2024), factor, basis="spend", fallbacks=[]).quality
    by_factor = assess(make_input(), factor, basis="spend", fallbacks=[]).quality
    assert (by_year.time, by_spend_year.time, by_factor.time) == (4, 3, 1)


def test_year_fallback_makes_time_one_worse():
    fallbacks = [Note("year_fallback_earlier", "")]
    quality = assess(make_input(year=2026), unsaved_factor(year=2025), basis="activity", fallbacks=fallbacks).quality
    assert quality.time == 2


def test_score_is_the_mean():
    quality = assess(make_input(region="GB", year=2025), unsaved_factor(), basis="spend", fallbacks=[]).quality
    # technology 4, time 1, geography 1, completeness 3, reliability 4
    assert quality.score == Decimal("2.6")


def test_outdated_warning_only_beyond_five_years():
    factor = unsaved_factor(year=2019)
    assert assess(make_input(year=2024), factor, basis="activity", fallbacks=[]).warnings == []
    warnings = assess(make_input(year=2025), factor, basis="activity", fallbacks=[]).warnings
    assert [w.code for w in warnings] == ["factor_outdated"]
    assert "2019" in warnings[0].detail
    assert "2025" in warnings[0].detail


@pytest.mark.parametrize(
    ("unit", "label", "warned"),
    [
        ("kWh (Gross CV)", "kWh (Net CV)", True),
        ("kWh (net cv)", "kWh (Gross CV)", True),
        ("kWh (Net CV)", "kWh (Net CV)", False),
        ("kWh", "kWh (Net CV)", False),
    ],
)
def test_cv_mismatch(unit, label, warned):
    warnings = assess(
        make_input(unit=unit, year=2025), unsaved_factor(unit_label=label), basis="activity", fallbacks=[]
    ).warnings
    assert ([w.code for w in warnings] == ["cv_mismatch"]) is warned
