"""``manage.py bench_validation`` on a small organization: the table, equal answers, nothing left behind."""

from __future__ import annotations

import datetime as dt
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from rest_framework import serializers

from bench import validation
from bench.management.commands.bench_validation import Command
from emissions.inputs import CalculationInputSerializer
from emissions.models import Organization
from perf.serializer_fields import CopiedFieldsMixin
from tests.factories import EmissionFactorFactory, EmissionFactory, OrganizationFactory
from tests.helpers import call_command

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny() -> Organization:
    org = OrganizationFactory.create(slug="tiny")
    factor = EmissionFactorFactory.create()
    for day in range(1, 6):
        EmissionFactory.create(
            organization=org,
            factor=factor,
            activity__activity=factor.activity,
            activity__period_start=dt.date(2025, 1, day),
        )
    return org


def _run(tmp_path: Path) -> tuple[Command, str, str]:
    stdout = StringIO()
    command = Command(stdout=stdout, stderr=StringIO())
    out = tmp_path / "validation.md"
    call_command(command, "--org", "tiny", "--runs", "2", "--output", str(out))
    return command, out.read_text(encoding="utf-8"), stdout.getvalue()


def test_reports_each_case_with_both_sides(tiny: Organization, tmp_path: Path) -> None:
    command, markdown, stdout = _run(tmp_path)
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| case")]
    assert [row.split("|")[1].strip() for row in rows] == [
        "validate one calculation input",
        "validate one activity input",
        "POST /api/v1/calculate/, whole request",
    ]
    assert all(row.rstrip(" |").endswith("x") for row in rows)
    assert "python manage.py bench_validation --org tiny --runs 2" in markdown
    assert markdown in stdout
    for case in command.benchmark.cases:
        assert len(case.drf.samples) == len(case.copied.samples) == 2
        assert case.drf.result == case.copied.result and len(case.copied.result) == validation.REPEAT
    # Every stored line validated (the run fails otherwise) and every request was answered with a calculation.
    assert all(valid for valid, _, _ in command.benchmark.cases[0].copied.result)
    assert all(b'"co2e_kg"' in body for body in command.benchmark.cases[2].copied.result)


def test_the_drf_side_deep_copies_and_puts_the_mixin_back() -> None:
    copied = CopiedFieldsMixin.get_fields
    with validation._drf_fields():
        fields = CalculationInputSerializer().get_fields()
        assert fields["category"] is not CalculationInputSerializer._declared_fields["category"]
        assert CopiedFieldsMixin.get_fields is not copied
        # DRF's deep copy calls the field's class again: its validators are new objects, not the declared field's.
        assert (
            fields["currency"].validators[0]
            is not CalculationInputSerializer._declared_fields["currency"].validators[0]
        )
    assert CopiedFieldsMixin.get_fields is copied
    shared = CalculationInputSerializer().get_fields()["currency"].validators[0]
    assert shared is CalculationInputSerializer._declared_fields["currency"].validators[0]
    assert isinstance(CalculationInputSerializer(), serializers.Serializer)


def test_leaves_nothing_behind(tiny: Organization, tmp_path: Path) -> None:
    users = get_user_model().objects.count()
    _run(tmp_path)
    assert get_user_model().objects.count() == users


def test_an_unknown_or_empty_organization_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="No organization 'tiny'"):
        _run(tmp_path)
    OrganizationFactory.create(slug="tiny")
    with pytest.raises(CommandError, match="has no activities"):
        _run(tmp_path)


def test_bad_runs(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="must be at least 1"):
        call_command(Command(stdout=StringIO()), "--org", "tiny", "--runs", "0", "--output", str(tmp_path / "x.md"))


def test_sides_that_disagree_fail_the_run(tiny: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drf_get_fields = validation._drf_get_fields

    def stricter(self: CopiedFieldsMixin) -> dict[str, serializers.Field]:
        fields = drf_get_fields(self)
        if "category" in fields:
            fields["category"] = serializers.IntegerField(max_value=0)
        return fields

    copied = CopiedFieldsMixin.get_fields
    monkeypatch.setattr(validation, "_drf_get_fields", stricter)
    with pytest.raises(CommandError, match="validate one calculation input: the two sides' results differ"):
        _run(tmp_path)
    assert CopiedFieldsMixin.get_fields is copied
