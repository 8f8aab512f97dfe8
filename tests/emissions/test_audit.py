"""The audit trail: every write path is recorded by the database's triggers, with who, which request and which job
(emissions.audit, migration 0009_audit_trail); the log is append-only; the admin shows it read-only, org-scoped."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import ProgrammingError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from calculator.types import CalculationInput
from emissions.audit import REQUEST_ID_HEADER, audit_context
from emissions.models import ActivityRecord, AuditEvent, Emission, Organization, Supplier
from emissions.services.activities import ActivityInput, activities_create
from emissions.services.organizations import org_user_create
from emissions.services.supplier_factors import supplier_factor_create
from emissions.services.suppliers import supplier_create, supplier_delete, supplier_update
from tests.emissions.api.payloads import activity_input
from tests.factories import EmissionFactorFactory, EmissionFactory, SupplierFactory, UserFactory
from tests.helpers import Client

pytestmark = pytest.mark.django_db

SUPPLIER = AuditEvent.Table.SUPPLIER
JAN = (dt.date(2025, 1, 1), dt.date(2025, 1, 31))


def events(table: str, object_id: int | None = None) -> list[AuditEvent]:
    queryset = AuditEvent.objects.filter(table_name=table).order_by("id")
    return list(queryset if object_id is None else queryset.filter(object_id=object_id))


def set_configs(ctx: CaptureQueriesContext) -> int:
    return sum("set_config" in query["sql"] for query in ctx.captured_queries)


@pytest.fixture
def factor():
    return EmissionFactorFactory(activity="desnz:7_400_4000_5", unit="kWh", co2e_per_unit=Decimal("0.177"))


def item(amount: str) -> ActivityInput:
    calc = CalculationInput(
        category=3, method="activity", activity="desnz:7_400_4000_5", amount=Decimal(amount), unit="MWh"
    )
    return ActivityInput(calculation=calc, period_start=JAN[0], period_end=JAN[1])


@pytest.mark.parametrize("method", ["copy", "bulk_create"])
def test_activities_create_records_every_row_with_the_job_context(org, factor, method):
    user = UserFactory()
    with audit_context(actor_id=user.pk, request_id="req-1", job_id=42), CaptureQueriesContext(connection) as ctx:
        records = activities_create(organization=org, items=[item("1"), item("2")], method=method)

    assert set_configs(ctx) == 1  # one per transaction, for both tables and every statement
    for table, objects in (
        (AuditEvent.Table.ACTIVITY, records),
        (AuditEvent.Table.EMISSION, [record.emission for record in records]),
    ):
        logged = events(table)
        assert [event.object_id for event in logged] == [obj.pk for obj in objects]
        assert {(e.action, e.organization_id, e.actor_id, e.request_id, e.job_id) for e in logged} == {
            ("insert", org.pk, user.pk, "req-1", 42)
        }
    emission_rows = [event.row for event in events(AuditEvent.Table.EMISSION)]
    assert [row["co2e_kg"] for row in emission_rows] == [Decimal("177.000000"), Decimal("354.000000")]
    assert {row["factor_id"] for row in emission_rows} == {factor.pk}


def test_writes_without_a_context_are_recorded_without_one(org):
    with CaptureQueriesContext(connection) as ctx:
        supplier = supplier_create(organization=org, data={"external_id": "S-1", "name": "Steel"})
    assert set_configs(ctx) == 0  # nothing to say: no extra statement
    [event] = events(SUPPLIER, supplier.pk)
    assert (event.action, event.actor_id, event.request_id, event.job_id) == ("insert", None, "", None)


def test_supplier_create_update_delete_through_the_services(org):
    with audit_context(actor_id=7, request_id="r-7"):
        supplier = supplier_create(organization=org, data={"external_id": "S-1", "name": "Steel", "country": "GB"})
        supplier_update(supplier=supplier, data={"name": "Steel plc"})
        supplier_id = supplier.pk
        supplier_delete(supplier=supplier)

    insert, update, delete = events(SUPPLIER, supplier_id)
    assert [insert.action, update.action, delete.action] == ["insert", "update", "delete"]
    assert insert.row["name"] == "Steel" and insert.row["country"] == "GB"
    assert update.row["name"] == "Steel plc"
    assert update.changed == {"name": "Steel"}  # the previous value of each changed column; updated_at is no change
    assert delete.row["name"] == "Steel plc"  # the row as deleted
    assert {(e.organization_id, e.actor_id, e.request_id) for e in (insert, update, delete)} == {(org.pk, 7, "r-7")}


def test_an_update_that_changes_nothing_records_nothing(org):
    supplier = supplier_create(organization=org, data={"external_id": "S-1", "name": "Steel"})
    emission = EmissionFactory(organization=org)
    before = AuditEvent.objects.count()

    supplier_update(supplier=supplier, data={"name": "Steel"})  # saves: updated_at moves, nothing else
    Emission.objects.filter(pk=emission.pk).update(co2e_kg=emission.co2e_kg)

    assert AuditEvent.objects.count() == before


def test_supplier_factors_are_recorded_and_public_factors_are_not(org):
    supplier = SupplierFactory(organization=org)
    EmissionFactorFactory(activity="public:one")  # a public factor (what factor imports write)
    with audit_context(actor_id=3):
        factor = supplier_factor_create(
            supplier=supplier, data={"name": "Coil", "unit": "t", "co2e_per_unit": Decimal("1850"), "year": 2024}
        )

    logged = events(AuditEvent.Table.SUPPLIER_FACTOR)
    assert [(e.object_id, e.action, e.organization_id, e.actor_id) for e in logged] == [
        (factor.pk, "insert", org.pk, 3)
    ]
    assert logged[0].row["co2e_per_unit"] == Decimal("1850")


def test_the_context_is_sent_once_per_transaction_and_again_when_it_changes(org):
    supplier = SupplierFactory(organization=org)
    with audit_context(actor_id=5), transaction.atomic(), CaptureQueriesContext(connection) as ctx:
        Supplier.objects.filter(pk=supplier.pk).update(name="One")
        Supplier.objects.filter(pk=supplier.pk).update(name="Two")
        assert set_configs(ctx) == 1
        with audit_context(actor_id=6):
            Supplier.objects.filter(pk=supplier.pk).update(name="Three")
    assert set_configs(ctx) == 2
    assert [(e.row["name"], e.actor_id) for e in events(SUPPLIER, supplier.pk)][1:] == [
        ("One", 5),
        ("Two", 5),
        ("Three", 6),
    ]


def test_a_rolled_back_savepoint_forgets_what_it_sent(org):
    supplier = SupplierFactory(organization=org)
    with transaction.atomic(), CaptureQueriesContext(connection) as ctx:
        try:
            with transaction.atomic(), audit_context(actor_id=8):
                Supplier.objects.filter(pk=supplier.pk).update(name="Lost")
                raise RuntimeError
        except RuntimeError:
            pass
        # PostgreSQL undid the savepoint's set_config with it: the same context must be sent again.
        with audit_context(actor_id=8):
            Supplier.objects.filter(pk=supplier.pk).update(name="Kept")
    assert set_configs(ctx) == 2
    assert [(e.row["name"], e.actor_id) for e in events(SUPPLIER, supplier.pk)][1:] == [("Kept", 8)]


def test_reads_send_nothing(org):
    supplier = SupplierFactory(organization=org)
    with audit_context(actor_id=1), transaction.atomic(), CaptureQueriesContext(connection) as ctx:
        list(Supplier.objects.filter(pk=supplier.pk))
        list(AuditEvent.objects.all())
    assert set_configs(ctx) == 0


def test_the_log_refuses_update_and_delete(org):
    SupplierFactory(organization=org)
    with pytest.raises(ProgrammingError, match="append-only"), transaction.atomic():
        AuditEvent.objects.update(actor_id=1)
    with pytest.raises(ProgrammingError, match="append-only"), transaction.atomic():
        AuditEvent.objects.all().delete()
    with pytest.raises(ProgrammingError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=-1).delete()  # refused even when no row matches
    assert AuditEvent.objects.count() == 1


def test_the_owner_can_truncate_the_log(org):
    SupplierFactory(organization=org)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {AuditEvent._meta.db_table}")
    assert AuditEvent.objects.count() == 0


def test_deleting_an_organization_keeps_its_log(org):
    emission = EmissionFactory(organization=org, supplier=None, activity__supplier=None)
    activity_id, org_id = emission.activity_id, org.pk
    Organization.objects.filter(pk=org_id).delete()

    assert not ActivityRecord.objects.filter(pk=activity_id).exists()
    logged = AuditEvent.objects.for_org(org_id)
    assert set(logged.filter(object_id=emission.pk, table_name=AuditEvent.Table.EMISSION).values_list("action")) == {
        ("insert",),
        ("delete",),
    }


@pytest.mark.django_db(transaction=True)
def test_the_context_does_not_outlive_its_transaction(org):
    supplier = SupplierFactory(organization=org)
    with audit_context(actor_id=9), transaction.atomic():
        Supplier.objects.filter(pk=supplier.pk).update(name="With")
    with transaction.atomic():  # same connection, next transaction, no context
        Supplier.objects.filter(pk=supplier.pk).update(name="Without")
    Supplier.objects.filter(pk=supplier.pk).update(name="Autocommit")
    with audit_context(actor_id=10):
        Supplier.objects.filter(pk=supplier.pk).update(name="Autocommit with")  # run in a transaction of its own
    assert [(e.row["name"], e.actor_id) for e in events(SUPPLIER, supplier.pk)][1:] == [
        ("With", 9),
        ("Without", None),
        ("Autocommit", None),
        ("Autocommit with", 10),
    ]


# -- requests: the API's and the admin's writes ----------------------------------------------------------------------


def test_an_api_write_records_the_api_user_and_the_request_id(api, org):
    body = {"external_id": "API-1", "name": "Via API"}
    response = api.post(reverse("supplier-list"), body, format="json", HTTP_X_REQUEST_ID="abc-123")
    assert response.status_code == 201
    assert response[REQUEST_ID_HEADER] == "abc-123"
    [event] = events(SUPPLIER, response.json()["id"])
    assert (event.action, event.actor_id, event.request_id) == ("insert", api.user.pk, "abc-123")


def test_an_api_activity_batch_records_the_api_user_on_every_copied_row(api, electricity_factor):
    response = api.post(
        reverse("activity-list"), [activity_input(), activity_input()], format="json", HTTP_X_REQUEST_ID="batch-9"
    )
    assert response.status_code == 201
    logged = AuditEvent.objects.filter(table_name__in=[AuditEvent.Table.ACTIVITY, AuditEvent.Table.EMISSION])
    assert sorted(logged.values_list("table_name", "actor_id", "request_id")) == [
        (AuditEvent.Table.ACTIVITY, api.user.pk, "batch-9"),
        (AuditEvent.Table.ACTIVITY, api.user.pk, "batch-9"),
        (AuditEvent.Table.EMISSION, api.user.pk, "batch-9"),
        (AuditEvent.Table.EMISSION, api.user.pk, "batch-9"),
    ]


@pytest.mark.parametrize("sent", [None, "", "has spaces", "x" * 129, "semi;colon"])
def test_a_missing_or_invalid_request_id_is_replaced_by_a_generated_one(api, sent):
    headers: dict[str, Any] = {} if sent is None else {"HTTP_X_REQUEST_ID": sent}
    response = api.post(reverse("supplier-list"), {"external_id": "API-1", "name": "Via API"}, format="json", **headers)
    assert response.status_code == 201
    generated = response[REQUEST_ID_HEADER]
    assert len(generated) == 32 and int(generated, 16) >= 0 and generated != sent
    [event] = events(SUPPLIER, response.json()["id"])
    assert event.request_id == generated


def test_a_read_request_gets_an_id_and_runs_no_extra_query(api, django_assert_num_queries, cold_cache):
    cold_cache()
    with django_assert_num_queries(2):  # token (user, membership, org joined), page: as without the audit trail
        response = api.get(reverse("supplier-list"))
    assert response.status_code == 200
    assert len(response[REQUEST_ID_HEADER]) == 32


def logged_in_org_admin(org: Organization) -> tuple[Any, Client]:
    """A staff member of ``org`` (role admin: may change suppliers in the admin), and a client logged in as them."""
    user, _ = org_user_create(organization=org, username="orgadmin", role="admin")
    client = Client()
    client.force_login(user)
    return user, client


def test_an_admin_edit_records_the_admin_user(org):
    staff, staff_client = logged_in_org_admin(org)
    supplier = SupplierFactory(organization=org, name="Old name", country="GB", naics="")
    response = staff_client.post(
        reverse("admin:emissions_supplier_change", args=[supplier.pk]),
        {
            "organization": org.pk,
            "external_id": supplier.external_id,
            "name": "New name",
            "country": "GB",
            "naics": "",
        },
        HTTP_X_REQUEST_ID="admin-req",
    )
    assert response.status_code == 302
    update = events(SUPPLIER, supplier.pk)[-1]
    assert (update.action, update.actor_id, update.request_id) == ("update", staff.pk, "admin-req")
    assert update.changed == {"name": "Old name"}


def test_the_admin_lists_only_the_organizations_events_and_cannot_change_them(org, other_org):
    _, staff_client = logged_in_org_admin(org)
    own = SupplierFactory(organization=org)
    other = SupplierFactory(organization=other_org)
    response = staff_client.get(reverse("admin:emissions_auditevent_changelist"))
    assert response.status_code == 200
    listed = {(event.organization_id, event.object_id) for event in response.context["cl"].result_list}
    assert (org.pk, own.pk) in listed
    assert all(org_id == org.pk for org_id, _ in listed)
    assert (other_org.pk, other.pk) not in listed

    [event] = events(SUPPLIER, own.pk)
    [other_event] = events(SUPPLIER, other.pk)
    assert staff_client.get(reverse("admin:emissions_auditevent_add")).status_code == 403
    assert staff_client.post(reverse("admin:emissions_auditevent_change", args=[event.pk]), {}).status_code == 403
    assert staff_client.post(reverse("admin:emissions_auditevent_delete", args=[event.pk]), {}).status_code == 403
    assert staff_client.get(reverse("admin:emissions_auditevent_change", args=[other_event.pk])).status_code == 302


def test_the_admin_names_the_actor(org):
    superuser = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(superuser)
    with audit_context(actor_id=superuser.pk):
        SupplierFactory(organization=org)
    response = client.get(reverse("admin:emissions_auditevent_changelist"))
    assert response.status_code == 200
    assert '<td class="field-actor">root</td>' in response.content.decode()
