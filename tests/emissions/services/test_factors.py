"""factor_dataset_import: full import, idempotence, atomicity and refusal of changed files."""

from __future__ import annotations

import dataclasses
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from emissions.importers import desnz, ipcc_gwp
from emissions.importers.base import FactorFileError, FactorImportError, ParsedDataset
from emissions.models import EmissionFactor, FactorDataset
from emissions.services import factors as service
from emissions.services.factors import factor_dataset_import

DATA = Path(settings.FACTOR_DATA_DIR)
DESNZ_HEADER = "\ufeffID,Scope,Level 1,Level 2,Level 3,Level 4,Column Text,UOM,GHG/Unit,GHG Conversion Factor 2025\n"
DESNZ_ROW = "7_400_4000_5_1,Scope 2,UK electricity,Electricity generated,Electricity: UK,kWh,,kWh,kg CO2e,{value}\n"

pytestmark = pytest.mark.django_db


def _copy(relative: str, target: Path) -> Path:
    path = target / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DATA / relative, path)
    return path


def _desnz_dir(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / desnz.FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DESNZ_HEADER + "".join(rows), encoding="utf-8")
    return tmp_path


def test_import_all_sources_then_reimport_changes_nothing():
    first = [factor_dataset_import(source=source, directory=DATA) for source in service.IMPORTERS]
    created = {summary.source: summary.factors_created for summary in first}
    assert created == {"ipcc_gwp": 36 + 90 + 58 + 86 + 86, "epa_supply_chain": 1016, "desnz": 2616, "epa_hub": 270}
    assert EmissionFactor.objects.count() == sum(created.values())
    assert FactorDataset.objects.filter(organization__isnull=True).count() == 8

    steel = EmissionFactor.objects.get(activity="naics:331110")
    assert steel.co2e_per_unit == Decimal("0.787")
    assert steel.gases["HFC-134a"] == "0.000325"
    grid = EmissionFactor.objects.get(activity="desnz:7_400_4000_5")
    assert (grid.co2e_per_unit, grid.unit) == (Decimal("0.17700"), "kWh")
    # Biogenic CO2 is stored beside CO2e, not in it: DESNZ's outside-of-scopes figure, the Hub's biomass CO2.
    assert grid.biogenic_co2_per_unit == Decimal("0.11507")
    biodiesel = EmissionFactor.objects.get(activity="epa_hub:stationary:biodiesel-100:gallon")
    assert (biodiesel.co2e_per_unit, biodiesel.biogenic_co2_per_unit) == (Decimal("0.00657"), Decimal("9.45"))
    assert EmissionFactor.objects.filter(dataset__source="epa_hub", biogenic_co2_per_unit__isnull=False).count() == 11
    assert not EmissionFactor.objects.filter(dataset__source="epa_supply_chain", biogenic_co2_per_unit__isnull=False)
    dataset = FactorDataset.objects.get(source="desnz", version="2025")
    assert "Open Government Licence v3.0" in dataset.licence
    assert dataset.publisher.startswith("UK Department for Energy Security and Net Zero")
    assert len(dataset.checksum) == 64

    again = [factor_dataset_import(source=source, directory=DATA) for source in service.IMPORTERS]
    assert {outcome.status for summary in again for outcome in summary.datasets} == {"unchanged"}
    assert sum(summary.factors_created for summary in again) == 0
    assert EmissionFactor.objects.count() == sum(created.values())
    assert FactorDataset.objects.count() == 8


def test_malformed_file_writes_nothing(tmp_path):
    directory = _desnz_dir(
        tmp_path, DESNZ_ROW.format(value="0.17700"), DESNZ_ROW.format(value="oops").replace("_1,", "_9_1,", 1)
    )
    with pytest.raises(FactorFileError, match="line 3, column 'GHG Conversion Factor 2025': 'oops' is not a number"):
        factor_dataset_import(source="desnz", directory=directory)
    assert FactorDataset.objects.count() == 0
    assert EmissionFactor.objects.count() == 0


def test_changed_file_under_same_version_is_refused_and_old_factors_stay(tmp_path):
    path = _copy(ipcc_gwp.FILE, tmp_path)
    factor_dataset_import(source="ipcc_gwp", directory=tmp_path)
    before = list(EmissionFactor.objects.order_by("pk").values_list("pk", "co2e_per_unit"))
    path.write_text(path.read_text().replace("CH4,21,23,25,28,", "CH4,21,23,25,29,"))
    with pytest.raises(FactorImportError, match=r"already imported from different files.*new version"):
        factor_dataset_import(source="ipcc_gwp", directory=tmp_path)
    assert list(EmissionFactor.objects.order_by("pk").values_list("pk", "co2e_per_unit")) == before


def test_new_version_is_added_beside_the_old_one(tmp_path, monkeypatch):
    directory = _desnz_dir(tmp_path, DESNZ_ROW.format(value="0.17700"))
    factor_dataset_import(source="desnz", directory=directory)
    # A later edition of the file, declared as a new version.
    _desnz_dir(tmp_path, DESNZ_ROW.format(value="0.20705"))
    new_spec = dataclasses.replace(desnz.DATASET, version="2025.1")

    def parse_new(directory: Path, *, gwp=None) -> list[ParsedDataset]:
        (parsed,) = desnz.parse(directory, gwp=gwp)
        return [ParsedDataset(dataset=new_spec, factors=parsed.factors, skipped=parsed.skipped)]

    new_importer = dataclasses.replace(desnz.IMPORTER, datasets=(new_spec,), parse=parse_new)
    monkeypatch.setitem(service.IMPORTERS, "desnz", new_importer)
    summary = factor_dataset_import(source="desnz", directory=directory)
    assert [(o.version, o.status, o.factors_created) for o in summary.datasets] == [("2025.1", "imported", 1)]
    values = dict(
        EmissionFactor.objects.filter(activity="desnz:7_400_4000_5").values_list("dataset__version", "co2e_per_unit")
    )
    assert values == {"2025": Decimal("0.17700"), "2025.1": Decimal("0.20705")}


def test_epa_sources_need_the_gwp_table_first():
    with pytest.raises(FactorImportError, match="import it first"):
        factor_dataset_import(source="epa_hub", directory=DATA)
    assert FactorDataset.objects.count() == 0


def test_missing_files_and_unknown_source_are_clear_errors(tmp_path):
    with pytest.raises(
        FactorImportError, match=r"missing file\(s\).*ghg-conversion-factors-2025-flat-format\.csv.*gov\.uk"
    ):
        factor_dataset_import(source="desnz", directory=tmp_path)
    with pytest.raises(FactorImportError, match="Unknown factor source 'ecoinvent'"):
        factor_dataset_import(source="ecoinvent", directory=tmp_path)
