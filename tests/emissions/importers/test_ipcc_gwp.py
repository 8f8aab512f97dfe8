"""IPCC GWP parser on the published file and on malformed copies."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from emissions.importers import ipcc_gwp
from emissions.importers.base import FactorFileError


@pytest.fixture(scope="module")
def parsed():
    return {result.dataset.version: result for result in ipcc_gwp.parse(Path(settings.FACTOR_DATA_DIR))}


def test_one_dataset_per_report_with_basis_year(parsed):
    assert {v: (r.dataset.basis_year, r.dataset.gwp_set) for v, r in parsed.items()} == {
        "SAR": (1995, "SAR"),
        "TAR": (2001, "TAR"),
        "AR4": (2007, "AR4"),
        "AR5": (2013, "AR5"),
        "AR6": (2021, "AR6"),
    }


def test_published_values(parsed):
    ar5 = ipcc_gwp.gwp_table(parsed["AR5"])
    assert ar5["CH4"] == Decimal("28")
    assert ar5["N2O"] == Decimal("265")
    assert ar5["SF6"] == Decimal("23500")
    assert ipcc_gwp.gwp_table(parsed["AR6"])["CH4"] == Decimal("27.9")
    assert ipcc_gwp.gwp_table(parsed["SAR"])["CH4"] == Decimal("21")


def test_factor_shape_and_counts(parsed):
    ch4 = next(f for f in parsed["AR5"].factors if f.name == "CH4")
    assert (ch4.activity, ch4.unit, ch4.region, ch4.year, ch4.gwp_set) == ("gwp:CH4", "kg", "GLOBAL", 2013, "AR5")
    # 105 species; a report's empty cells (species it did not assess) are skipped and counted.
    for result in parsed.values():
        assert len(result.factors) + result.skipped["empty GWP value"] == 105
    assert len(parsed["AR5"].factors) == 86


def test_bad_number_reports_the_physical_line(tmp_path):
    folder = tmp_path / "ipcc_gwp"
    folder.mkdir()
    header = "Species,SARGWP100,TARGWP100,AR4GWP100,AR5GWP100,AR6GWP100\n"
    (folder / "globalwarmingpotentials.csv").write_text(
        f"# comment,,,\n{header}CH4,21,23,25,28,27.9\nN2O,310,x,298,265,273\n"
    )
    with pytest.raises(FactorFileError, match=r"line 4, column 'TARGWP100': 'x' is not a number"):
        ipcc_gwp.parse(tmp_path)


def test_missing_report_column(tmp_path):
    folder = tmp_path / "ipcc_gwp"
    folder.mkdir()
    (folder / "globalwarmingpotentials.csv").write_text("Species,SARGWP100\nCH4,21\n")
    with pytest.raises(FactorFileError, match="line 1, column 'TARGWP100': missing column"):
        ipcc_gwp.parse(tmp_path)
