"""Shared pieces of the factor importers.

Each source module (``ipcc_gwp``, ``epa_supply_chain``, ``desnz``, ``epa_hub``) defines an
:class:`Importer`: the files it reads, the datasets they describe and a *pure* ``parse``
function (files in, :class:`ParsedDataset` out, no database), so parsers can be unit tested
on their own. ``emissions.services.factors`` does the writing.

This module holds what they share: the error types, the spec dataclasses, CSV reading that
keeps the file's line numbers for error messages, Decimal parsing and file checksums.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

# Factors are stored with 15 decimal places (emissions.models.FACTOR_DIGITS); rounding here
# keeps what the parser returns identical to what the database will hold.
FACTOR_QUANTUM = Decimal("1e-15")
SOURCES_HINT = "see the README's 'Emission-factor data' section for where to download the official files"
SKIP_NEGATIVE = "negative factor"


class FactorImportError(Exception):
    """An import that cannot go ahead; the message says why and what the user can do."""


class FactorFileError(FactorImportError):
    """A source file that cannot be read as published: names the file, line and column."""

    def __init__(self, path: Path, message: str, *, line: int | None = None, column: str | None = None) -> None:
        self.path = path
        self.line = line
        self.column = column
        where = [f"{path.parent.name}/{path.name}"]
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {message}")


@dataclass(frozen=True)
class DatasetSpec:
    """The FactorDataset row one published edition becomes (attribution as each publisher asks)."""

    source: str
    version: str
    name: str
    publisher: str
    licence: str
    url: str
    basis_year: int
    gwp_set: str


@dataclass(frozen=True)
class FactorSpec:
    """One EmissionFactor row: kg CO2e per one ``unit``; ``gases`` in kg CO2e per unit as strings.

    ``biogenic_co2_per_unit``: kg of biogenic CO2 per unit that the publisher reports outside the scopes
    (never included in ``co2e_per_unit`` or ``gases``); None when the publisher gives none.
    """

    activity: str
    name: str
    unit: str
    unit_label: str
    region: str
    year: int
    co2e_per_unit: Decimal
    gwp_set: str
    category: str = ""
    currency: str = ""
    gases: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)
    biogenic_co2_per_unit: Decimal | None = None


@dataclass
class ParsedDataset:
    """What a parser read for one dataset: the factors and the rows it left out, by reason."""

    dataset: DatasetSpec
    factors: list[FactorSpec] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def add(self, spec: FactorSpec, *, path: Path, line: int) -> None:
        """Append ``spec``; a second factor with the same activity key is a file error."""
        if spec.activity in self._activities:
            raise FactorFileError(path, f"duplicate activity key '{spec.activity}'", line=line)
        self._activities.add(spec.activity)
        self.factors.append(spec)

    def add_row(
        self,
        row: CsvRow,
        *,
        activity: str,
        name: str,
        unit: str,
        unit_label: str,
        region: str,
        co2e_per_unit: Decimal,
        category: str = "",
        currency: str = "",
        gases: Mapping[str, str] | None = None,
        extra: Mapping[str, str] | None = None,
        gwp_set: str | None = None,
        biogenic_co2_per_unit: Decimal | None = None,
    ) -> None:
        """Add the factor ``row`` publishes, through :meth:`add`.

        The factor is for the dataset's basis year and on its GWP set unless ``gwp_set`` names the basis of a
        table published on another one; ``co2e_per_unit`` and ``biogenic_co2_per_unit`` are rounded to the
        precision the database stores.
        """
        self.add(
            FactorSpec(
                activity=activity,
                name=name,
                category=category,
                unit=unit,
                unit_label=unit_label,
                region=region,
                year=self.dataset.basis_year,
                co2e_per_unit=quantize_factor(co2e_per_unit),
                gwp_set=gwp_set or self.dataset.gwp_set,
                currency=currency,
                gases=gases if gases is not None else {},
                extra=extra if extra is not None else {},
                biogenic_co2_per_unit=None if biogenic_co2_per_unit is None else quantize_factor(biogenic_co2_per_unit),
            ),
            path=row.path,
            line=row.line,
        )

    def skip_negative(self, value: Decimal, *, rows: int = 1) -> bool:
        """Count ``rows`` as skipped and return True when ``value`` is negative.

        Factors are stored non-negative (the ``factor_co2e_non_negative`` constraint), so a negative published
        value is left out and counted in the import summary instead of failing the whole import.
        """
        if value < 0:
            self.skipped[SKIP_NEGATIVE] += rows
            return True
        return False

    def __post_init__(self) -> None:
        self._activities: set[str] = {f.activity for f in self.factors}


Parser = Callable[..., list[ParsedDataset]]


@dataclass(frozen=True)
class Importer:
    """One source: its files (relative to the data directory), datasets and parser.

    ``parse(directory, gwp=...)`` must return one ParsedDataset per entry of ``datasets``.
    ``needs_gwp``: the parser needs the AR5 GWP-100 table (species -> Decimal), which the
    service reads from the imported ``ipcc_gwp`` AR5 dataset.
    """

    source: str
    files: tuple[str, ...]
    datasets: tuple[DatasetSpec, ...]
    parse: Parser
    url: str
    needs_gwp: bool = False
    notes: tuple[str, ...] = ()

    def paths(self, directory: Path) -> list[Path]:
        """The source files under ``directory``; FactorImportError names any that are missing."""
        paths = [directory / name for name in self.files]
        missing = [name for name, path in zip(self.files, paths, strict=True) if not path.is_file()]
        if missing:
            raise FactorImportError(
                f"{self.source}: missing file(s) in {directory}: {', '.join(missing)}. "
                f"Download them from {self.url} ({SOURCES_HINT})."
            )
        return paths


@dataclass(frozen=True)
class CsvRow:
    """One data row of a CSV file, with its line number for error messages."""

    path: Path
    line: int
    values: Mapping[str, str]

    def text(self, column: str) -> str:
        """The cell with surrounding whitespace (including no-break spaces) removed."""
        return self.values[column].strip()

    def decimal(self, column: str) -> Decimal | None:
        """The cell as a finite Decimal, ``None`` when empty; a FactorFileError when not a number."""
        text = self.text(column)
        if not text:
            return None
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise self.error(f"'{text}' is not a number", column=column) from None
        if not value.is_finite():
            raise self.error(f"'{text}' is not a finite number", column=column)
        return value

    def required_decimal(self, column: str) -> Decimal:
        value = self.decimal(column)
        if value is None:
            raise self.error("a number is required here but the cell is empty", column=column)
        return value

    def error(self, message: str, *, column: str | None = None) -> FactorFileError:
        return FactorFileError(self.path, message, line=self.line, column=column)


def read_csv(path: Path, *, required: Sequence[str], comment_prefix: str | None = None) -> Iterator[CsvRow]:
    """Rows of a UTF-8 (optionally BOM-prefixed) CSV file as :class:`CsvRow`.

    Header names are stripped of whitespace. Lines starting with ``comment_prefix`` and empty
    lines are skipped. A missing ``required`` column, a row with the wrong number of fields,
    or bytes that are not UTF-8 raise FactorFileError naming the line.
    """
    position = {"line": 0}

    def lines(handle: Iterator[str]) -> Iterator[str]:
        # csv.reader counts only the lines it is fed; count physical lines here so that error
        # messages match what the user sees in an editor even after skipped comment lines.
        for number, line in enumerate(handle, start=1):
            position["line"] = number
            if comment_prefix is not None and line.startswith(comment_prefix):
                continue
            yield line

    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(lines(handle))
            header: list[str] | None = None
            for record in reader:
                if not any(cell.strip() for cell in record):
                    continue
                if header is None:
                    header = [name.strip() for name in record]
                    for column in required:
                        if column not in header:
                            raise FactorFileError(
                                path, "missing column in header", line=position["line"], column=column
                            )
                    continue
                if len(record) != len(header):
                    raise FactorFileError(
                        path, f"expected {len(header)} fields, found {len(record)}", line=position["line"]
                    )
                yield CsvRow(path=path, line=position["line"], values=dict(zip(header, record, strict=True)))
            if header is None:
                raise FactorFileError(path, f"the file is empty; expected a header with {', '.join(required)}")
    except UnicodeDecodeError as exc:
        raise FactorFileError(path, f"not UTF-8 text ({exc.reason})", line=position["line"] or None) from None
    except csv.Error as exc:
        raise FactorFileError(path, f"unparseable CSV ({exc})", line=position["line"]) from None


def files_checksum(paths: Sequence[Path]) -> str:
    """sha256 of one file, or of the (name, sha256) list of several files in name order."""
    digests = []
    for path in sorted(paths, key=lambda p: p.name):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digests.append((path.name, digest.hexdigest()))
    if len(digests) == 1:
        return digests[0][1]
    combined = "".join(f"{name}\0{hexdigest}\n" for name, hexdigest in digests)
    return hashlib.sha256(combined.encode()).hexdigest()


def quantize_factor(value: Decimal) -> Decimal:
    """``value`` rounded to the 15 decimal places a factor is stored with."""
    return value.quantize(FACTOR_QUANTUM)


def decimal_str(value: Decimal) -> str:
    """Plain (never scientific) decimal text without trailing zeros, for the JSON ``gases`` / ``extra``.

    Products with quantized GWPs carry long zero tails (0.0001154400000000000000000); the value,
    not the precision of the multiplication, is what is published.
    """
    return format(value.normalize(), "f")


# EPA's extracted tables glue footnote letters to names: "Passenger Car A", "Medium- and
# Heavy-Duty TruckC". A single capital after a space or right after a lower-case letter, at
# the very end, is such a marker (real names end in a word, an acronym or a parenthesis).
_FOOTNOTE = re.compile(r"(?:(?<=[a-z])|\s)[A-Z]$")


def clean_name(text: str) -> str:
    """A publisher's name without surrounding whitespace or a trailing footnote letter."""
    return _FOOTNOTE.sub("", text.strip()).strip()
