"""US EPA Supply Chain GHG Emission Factors v1.3.0 (USEEIO, 6-digit NAICS 2017, 2022 USD).

Factor ``naics:<code>``: kg CO2e per 2022 USD at purchaser price ("with Margins", cradle to
point of sale). ``extra`` keeps the published without-margins value and the margins. The
byGHG file gives each gas's mass per USD; those are converted to kg CO2e with the AR5
GWP-100 table and stored in ``gases`` (AR5 is EPA's basis: recomputing CO2e from the per-gas
file with AR5 reproduces the published values).

Biogenic CO2 is not separated by this dataset (one CO2e per USD for the whole supply chain, and
its per-gas CO2 does not say how much is biogenic), so ``biogenic_co2_per_unit`` stays None.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

from emissions.importers.base import (
    DatasetSpec,
    FactorImportError,
    Importer,
    ParsedDataset,
    decimal_str,
    read_csv,
)

SOURCE = "epa_supply_chain"
FOLDER = "epa_supply_chain_ghg_ef_v1.3.0"
CO2E_FILE = f"{FOLDER}/SupplyChainGHGEmissionFactors_v1.3.0_NAICS_CO2e_USD2022.csv"
BY_GHG_FILE = f"{FOLDER}/SupplyChainGHGEmissionFactors_v1.3.0_NAICS_byGHG_USD2022.csv"
URL = "https://doi.org/10.23719/1531143"

CODE = "2017 NAICS Code"
TITLE = "2017 NAICS Title"
GHG = "GHG"
UNIT = "Unit"
WITHOUT = "Supply Chain Emission Factors without Margins"
MARGINS = "Margins of Supply Chain Emission Factors"
WITH = "Supply Chain Emission Factors with Margins"
USEEIO = "Reference USEEIO Code"
COLUMNS = [CODE, TITLE, GHG, UNIT, WITHOUT, MARGINS, WITH, USEEIO]

CO2E_GHG = "All GHGs"
CO2E_UNIT = "kg CO2e/2022 USD, purchaser price"
MASS_UNIT = "kg/2022 USD, purchaser price"
UNSPECIFIED = "HFCs and PFCs, unspecified"

# EPA gas name -> (key in EmissionFactor.gases, species in the IPCC GWP table). CO2 is the
# reference gas (GWP 1 by definition, so not in the table). "HFCs and PFCs, unspecified" is
# published in kg CO2e already.
GASES: dict[str, tuple[str, str | None]] = {
    "Carbon dioxide": ("CO2", None),
    "Methane": ("CH4", "CH4"),
    "Nitrous oxide": ("N2O", "N2O"),
    "HFC-23": ("HFC-23", "HFC23"),
    "HFC-32": ("HFC-32", "HFC32"),
    "HFC-125": ("HFC-125", "HFC125"),
    "HFC-134a": ("HFC-134a", "HFC134a"),
    "HFC-143a": ("HFC-143a", "HFC143a"),
    "HFC-236fa": ("HFC-236fa", "HFC236fa"),
    "Carbon tetrafluoride": ("CF4", "CF4"),
    "Hexafluoroethane": ("C2F6", "C2F6"),
    "Perfluoropropane": ("C3F8", "C3F8"),
    "Perfluorocyclobutane": ("c-C4F8", "cC4F8"),
    "c-C4F8": ("c-C4F8", "cC4F8"),
    "Perfluorobutane": ("C4F10", "C4F10"),
    "Perfluorohexane": ("C6F14", "C6F14"),
    "Sulfur hexafluoride": ("SF6", "SF6"),
    "Nitrogen trifluoride": ("NF3", "NF3"),
    UNSPECIFIED: ("HFCs and PFCs, unspecified", None),
}

DATASET = DatasetSpec(
    source=SOURCE,
    version="1.3.0",
    name="US EPA Supply Chain GHG Emission Factors v1.3.0 (NAICS, 2022 USD)",
    publisher="US EPA Office of Research and Development",
    licence="US federal government work, public domain in the US (EPA ScienceHub licence). "
    "Cite: US EPA, Supply Chain GHG Emission Factors for US Industries and Commodities v1.3.0",
    url=URL,
    basis_year=2022,
    gwp_set="AR5",
)


def _gas_components(path: Path, gwp: Mapping[str, Decimal]) -> dict[str, dict[str, str]]:
    """NAICS code -> {gas key: kg CO2e per USD (with margins)} from the byGHG file."""
    components: dict[str, dict[str, str]] = defaultdict(dict)
    for row in read_csv(path, required=COLUMNS):
        gas = row.text(GHG)
        if gas not in GASES:
            raise row.error(f"unknown gas '{gas}'; add it to the gas table in {__name__}", column=GHG)
        key, species = GASES[gas]
        expected_unit = CO2E_UNIT if gas == UNSPECIFIED else MASS_UNIT
        if row.text(UNIT) != expected_unit:
            raise row.error(f"unit '{row.text(UNIT)}' for {gas}; expected '{expected_unit}'", column=UNIT)
        mass = row.required_decimal(WITH)
        if species is None:
            co2e = mass
        elif species in gwp:
            co2e = mass * gwp[species]
        else:
            raise FactorImportError(f"The AR5 GWP table has no value for {species} ({gas}); re-import ipcc_gwp.")
        code = row.text(CODE)
        if key in components[code]:
            raise row.error(f"gas '{gas}' appears twice for NAICS {code}", column=GHG)
        components[code][key] = decimal_str(co2e)
    return components


def parse(directory: Path, *, gwp: Mapping[str, Decimal] | None = None) -> list[ParsedDataset]:
    """Precondition: ``gwp`` is the AR5 GWP-100 table (species -> value)."""
    if gwp is None:
        raise FactorImportError("epa_supply_chain needs the AR5 GWP table: import ipcc_gwp first.")
    components = _gas_components(directory / BY_GHG_FILE, gwp)
    path = directory / CO2E_FILE
    result = ParsedDataset(dataset=DATASET)
    for row in read_csv(path, required=COLUMNS):
        code = row.text(CODE)
        if not (len(code) == 6 and code.isdigit()):
            raise row.error(f"'{code}' is not a 6-digit NAICS code", column=CODE)
        if row.text(GHG) != CO2E_GHG:
            raise row.error(f"expected '{CO2E_GHG}', found '{row.text(GHG)}'", column=GHG)
        if row.text(UNIT) != CO2E_UNIT:
            raise row.error(f"expected '{CO2E_UNIT}', found '{row.text(UNIT)}'", column=UNIT)
        with_margins = row.required_decimal(WITH)
        if result.skip_negative(with_margins):
            continue
        result.add_row(
            row,
            activity=f"naics:{code}",
            name=row.text(TITLE),
            unit="USD",
            unit_label=CO2E_UNIT.removeprefix("kg CO2e/"),
            region="US",
            co2e_per_unit=with_margins,
            currency="USD",
            gases=components.get(code, {}),
            extra={
                "without_margins": decimal_str(row.required_decimal(WITHOUT)),
                "margins": decimal_str(row.required_decimal(MARGINS)),
                "useeio_code": row.text(USEEIO),
                "price_basis": "purchaser",
            },
        )
    return [result]


IMPORTER = Importer(
    source=SOURCE,
    files=(CO2E_FILE, BY_GHG_FILE),
    datasets=(DATASET,),
    parse=parse,
    url=URL,
    needs_gwp=True,
)
