"""manage.py check_rollups: equal rollups exit 0; any difference, in any table, exits 1 naming it; --org scopes the
check; --rebuild repairs; --json."""

from __future__ import annotations

import json
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError
from django.db import connection

from emissions.models import EmissionRollup, Organization, RollupBase, SupplierRollup, SupplierYearRollup
from emissions.rollups import rollup_differences, rollups_flush
from tests.factories import EmissionFactory, SupplierFactory
from tests.helpers import call_command

pytestmark = pytest.mark.django_db


@pytest.fixture
def stored(org: Organization, other_org: Organization) -> None:
    EmissionFactory.create_batch(
        2, organization=org, activity__supplier=SupplierFactory(organization=org), co2e_kg=Decimal("1.25")
    )
    EmissionFactory.create(organization=other_org, co2e_kg=Decimal("3"))
    rollups_flush()


def run(*args: str) -> str:
    out = StringIO()
    call_command("check_rollups", *args, stdout=out)
    return out.getvalue()


def tamper(sql: str, *params: int) -> None:
    """Change a rollup table by hand, as a restore without triggers or a manual edit would."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


@pytest.mark.usefixtures("stored")
def test_equal_rollups_exit_zero() -> None:
    assert "equal the emissions: 0 differences" in run()
    assert json.loads(run("--json")) == {"differences": 0, "first": []}


@pytest.mark.rollups_unchecked
@pytest.mark.parametrize("model", [EmissionRollup, SupplierRollup, SupplierYearRollup])
def test_a_difference_in_any_table_exits_one_and_is_named(
    org: Organization, stored: None, model: type[RollupBase]
) -> None:
    group = model.objects.for_org(org).get()
    tamper(f"UPDATE {model._meta.db_table} SET co2e_kg = co2e_kg + 0.000001 WHERE id = %s", group.pk)
    out = StringIO()
    with pytest.raises(CommandError, match="1 group") as raised:
        call_command("check_rollups", stdout=out)
    assert raised.value.returncode == 1
    printed = out.getvalue()
    assert model._meta.db_table in printed
    assert "emissions count 2, co2e_kg 2.500000" in printed and "rollup count 2, co2e_kg 2.500001" in printed


@pytest.mark.rollups_unchecked
def test_a_missing_and_a_spurious_group_are_both_differences(org: Organization, stored: None) -> None:
    tamper("DELETE FROM emissions_emissionrollup WHERE organization_id = %s", org.pk)
    tamper(
        "INSERT INTO emissions_supplieryearrollup (organization_id, supplier_id, period, end_period, category, method,"
        " quality_code, count, co2e_kg, co2e_kg_squares, biogenic_co2_kg, biogenic_count)"
        " VALUES (%s, NULL, '2030-01-01', '2030-01-01', 1, 'spend', 0, 1, 1, 1, 0, 0)",
        org.pk,
    )
    count, differences = rollup_differences(organization_id=org.pk)
    assert count == 2
    assert {(d.table, d.expected is None, d.found is None) for d in differences} == {
        ("emissions_emissionrollup", False, True),  # the emissions have the group, the table not
        ("emissions_supplieryearrollup", True, False),  # the table has a group no emission is in
    }
    report = json.loads(_failing("--json"))
    assert report["differences"] == 2 and len(report["first"]) == 2


def _failing(*args: str) -> str:
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("check_rollups", *args, stdout=out)
    return out.getvalue()


@pytest.mark.rollups_unchecked
def test_org_scopes_the_check(org: Organization, other_org: Organization, stored: None) -> None:
    tamper("UPDATE emissions_emissionrollup SET count = count + 1 WHERE organization_id = %s", other_org.pk)
    assert "0 differences" in run("--org", org.slug)
    assert "1 group(s) of globex differ" in _failing("--org", other_org.slug)


def test_rebuild_repairs_and_exits_zero(org: Organization, other_org: Organization, stored: None) -> None:
    tamper("UPDATE emissions_supplierrollup SET count = 7 WHERE organization_id = %s", org.pk)
    tamper("DELETE FROM emissions_emissionrollup WHERE organization_id = %s", other_org.pk)
    printed = run("--rebuild")
    assert "2 group(s) of every organization differ" in printed
    assert "0 difference(s) after the rebuild" in printed
    assert rollup_differences() == (0, [])


def test_unknown_org_and_bad_limit_are_clear_errors() -> None:
    with pytest.raises(CommandError, match="no organization with slug 'nope'"):
        run("--org", "nope")
    with pytest.raises(CommandError, match="--limit must be 0 or more"):
        run("--limit", "-1")
