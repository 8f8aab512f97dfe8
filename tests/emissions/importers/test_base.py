"""Shared CSV reading, Decimal parsing, checksums and name cleaning of the factor importers."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path

import pytest

from emissions.importers.base import (
    SKIP_NEGATIVE,
    CsvRow,
    FactorFileError,
    FactorSpec,
    ParsedDataset,
    clean_name,
    decimal_str,
    files_checksum,
    read_csv,
)
from emissions.importers.desnz import DATASET


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def test_read_csv_strips_bom_and_header_spaces_and_keeps_physical_line_numbers(tmp_path):
    path = _write(tmp_path / "t.csv", "\ufeff# comment\n# another\nName , Value\nA,1.5\n\nB,2\n")
    rows = list(read_csv(path, required=["Name", "Value"], comment_prefix="#"))
    assert [(row.line, row.text("Name"), row.decimal("Value")) for row in rows] == [
        (4, "A", Decimal("1.5")),
        (6, "B", Decimal("2")),
    ]


def test_missing_column_names_file_line_and_column(tmp_path):
    path = _write(tmp_path / "t.csv", "Name,Other\nA,1\n")
    with pytest.raises(FactorFileError) as info:
        list(read_csv(path, required=["Name", "Value"]))
    assert str(info.value) == f"{tmp_path.name}/t.csv, line 1, column 'Value': missing column in header"


def test_bad_number_names_line_and_column(tmp_path):
    path = _write(tmp_path / "t.csv", "Name,Value\nA,1\nB,1.2.3\n")
    rows = read_csv(path, required=["Name", "Value"])
    assert next(rows).decimal("Value") == Decimal("1")
    row = next(rows)
    with pytest.raises(FactorFileError, match=r"t\.csv, line 3, column 'Value': '1\.2\.3' is not a number"):
        row.decimal("Value")


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-inf"])
def test_non_finite_numbers_are_rejected(tmp_path, text):
    path = _write(tmp_path / "t.csv", f"Value\n{text}\n")
    (row,) = read_csv(path, required=["Value"])
    with pytest.raises(FactorFileError, match="not a finite number"):
        row.decimal("Value")


def test_required_decimal_rejects_empty_cell(tmp_path):
    path = _write(tmp_path / "t.csv", "Name,Value\nA, \n")
    (row,) = read_csv(path, required=["Value"])
    assert row.decimal("Value") is None
    with pytest.raises(FactorFileError, match="line 2, column 'Value': a number is required"):
        row.required_decimal("Value")


def test_wrong_field_count_is_an_error(tmp_path):
    path = _write(tmp_path / "t.csv", "Name,Value\nA,1\nB,2,3\n")
    with pytest.raises(FactorFileError, match="line 3: expected 2 fields, found 3"):
        list(read_csv(path, required=["Name"]))


def test_empty_file_and_non_utf8_file_are_errors(tmp_path):
    with pytest.raises(FactorFileError, match="the file is empty"):
        list(read_csv(_write(tmp_path / "empty.csv", ""), required=["Name"]))
    latin = tmp_path / "latin.csv"
    latin.write_bytes("Name\nCaf\u00e9\n".encode("latin-1"))
    with pytest.raises(FactorFileError, match="not UTF-8"):
        list(read_csv(latin, required=["Name"]))


def test_checksum_of_one_file_is_its_sha256_and_several_files_depend_on_each(tmp_path):
    a = _write(tmp_path / "a.csv", "x\n")
    b = _write(tmp_path / "b.csv", "y\n")
    assert files_checksum([a]) == hashlib.sha256(b"x\n").hexdigest()
    both = files_checksum([b, a])
    assert both == files_checksum([a, b])
    _write(b, "z\n")
    assert files_checksum([a, b]) != both


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Passenger Car A", "Passenger Car"),
        ("Medium- and Heavy-Duty TruckC", "Medium- and Heavy-Duty Truck"),
        ("Air Travel - Long Haul (>= 2300 miles) ", "Air Travel - Long Haul (>= 2300 miles)"),
        ("Mixed MSW", "Mixed MSW"),
        ("CH2F2\u00a0", "CH2F2"),
    ],
)
def test_clean_name_removes_footnote_letters_and_spaces(raw, clean):
    assert clean_name(raw) == clean


def test_decimal_str_is_plain_text_without_trailing_zeros():
    assert decimal_str(Decimal("4.57E-9") * Decimal("28.000")) == "0.00000012796"
    assert decimal_str(Decimal("6E+1")) == "60"


def test_duplicate_activity_in_one_dataset_is_an_error(tmp_path):
    spec = FactorSpec(
        activity="x:1",
        name="x",
        unit="kg",
        unit_label="kg",
        region="GB",
        year=2025,
        co2e_per_unit=Decimal("1"),
        gwp_set="AR5",
    )
    parsed = ParsedDataset(dataset=DATASET)
    parsed.add(spec, path=tmp_path / "f.csv", line=2)
    with pytest.raises(FactorFileError, match="line 3: duplicate activity key 'x:1'"):
        parsed.add(spec, path=tmp_path / "f.csv", line=3)


def test_add_row_fills_the_datasets_year_and_gwp_set_rounds_the_value_and_keeps_the_line(tmp_path):
    row = CsvRow(path=tmp_path / "f.csv", line=7, values={})
    parsed = ParsedDataset(dataset=DATASET)
    parsed.add_row(
        row, activity="x:1", name="x", unit="kg", unit_label="kg", region="GB", co2e_per_unit=Decimal("1.23456789e-16")
    )
    parsed.add_row(
        row,
        activity="x:2",
        name="y",
        unit="kg",
        unit_label="kg",
        region="GB",
        co2e_per_unit=Decimal("2"),
        gwp_set="AR4",
    )
    first, second = parsed.factors
    assert (first.year, first.gwp_set, first.co2e_per_unit) == (DATASET.basis_year, DATASET.gwp_set, Decimal("0E-15"))
    assert (first.gases, first.extra, first.category, first.currency) == ({}, {}, "", "")
    assert (second.gwp_set, second.co2e_per_unit) == ("AR4", Decimal("2.000000000000000"))
    with pytest.raises(FactorFileError, match=r"f\.csv, line 7: duplicate activity key 'x:1'"):
        parsed.add_row(row, activity="x:1", name="x", unit="kg", unit_label="kg", region="GB", co2e_per_unit=Decimal(1))


def test_skip_negative_counts_the_rows_it_leaves_out():
    parsed = ParsedDataset(dataset=DATASET)
    assert parsed.skip_negative(Decimal("-0.1"), rows=4) is True
    assert parsed.skip_negative(Decimal("-2")) is True
    assert parsed.skip_negative(Decimal("0")) is False
    assert parsed.skipped == {SKIP_NEGATIVE: 5}
    assert parsed.factors == []
