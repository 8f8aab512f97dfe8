"""POST /api/v1/recalculations/ and the restatements it leaves: /restatements/, their detail and their lines."""

from __future__ import annotations

import datetime as dt
import json
from base64 import urlsafe_b64encode
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from calculator.types import CalculationInput
from emissions.models import EmissionFactor, FactorDataset, Job, Organization, Restatement
from emissions.services.activities import ActivityInput, activities_create
from emissions.services.recalculations import recalculation_params, recalculation_run
from tests.factories import EmissionFactorFactory, FactorDatasetFactory, SupplierFactory
from tests.helpers import unit_of_work

pytestmark = pytest.mark.django_db

URL = "/api/v1/recalculations/"
LIST = "/api/v1/restatements/"


def detail(pk: int) -> str:
    return f"{LIST}{pk}/"


def lines(pk: int) -> str:
    return f"{LIST}{pk}/lines/"


@pytest.fixture
def modify(electricity_factor: EmissionFactor) -> Callable[[], FactorDataset]:
    """Call it to add DESNZ "2025-mod", the electricity factor x 1.1, after storing what is to be recalculated (a
    new calculation would take the newest version)."""
    return lambda: modified_dataset(electricity_factor)


def modified_dataset(electricity_factor: EmissionFactor) -> FactorDataset:
    dataset = FactorDatasetFactory.create(source="desnz", version="2025-mod", basis_year=2025)
    EmissionFactorFactory.create(
        dataset=dataset,
        activity=electricity_factor.activity,
        name=electricity_factor.name,
        region="GB",
        year=2025,
        unit="kWh",
        co2e_per_unit=Decimal("0.1947"),
    )
    return dataset


def store(organization: Organization, months: int = 3) -> None:
    """Electricity lines in the first ``months`` of 2025, with and without a supplier."""
    supplier = SupplierFactory.create(organization=organization)
    items = [
        ActivityInput(
            CalculationInput(
                category=3,
                method="activity",
                amount=Decimal(100 * month),
                unit="kWh",
                activity="desnz:7_400_4000_5",
                dataset_version="2025",  # whichever versions exist by then
                supplier_id=supplier.pk if month % 2 else None,
            ),
            dt.date(2025, month, 1),
            dt.date(2025, month, 28),
        )
        for month in range(1, months + 1)
    ]
    activities_create(organization=organization, items=items)


def recalculated(organization: Organization, target: FactorDataset) -> Job:
    with unit_of_work():
        params = recalculation_params(organization=organization, target_dataset_id=target.pk)
        return recalculation_run(organization=organization, params=params)


def test_post_queues_a_job_and_answers_202_with_its_location(
    api: Any, org: Organization, modify: Callable[[], FactorDataset]
) -> None:
    modified = modify()
    supplier = SupplierFactory.create(organization=org)
    body = {"dataset": modified.pk, "period_from": "2025-01-01", "period_to": "2025-12-31", "categories": [3, 1]}
    response = api.post(URL, {**body, "suppliers": [supplier.pk], "source": "desnz"}, format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get()
    assert response["Location"] == f"http://testserver/api/v1/jobs/{job.pk}/"
    body = response.json()
    assert (body["id"], body["kind"], body["state"], body["params"]) == (job.pk, "recalculation", "queued", job.params)
    assert body["url"] == response["Location"]
    assert (job.organization, job.params["categories"], job.params["suppliers"]) == (org, [1, 3], [supplier.pk])
    assert (job.params["dataset"], job.params["period_from"], job.params["source"]) == (
        modified.pk,
        "2025-01-01",
        "desnz",
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"dataset": None}, "dataset"),
        ({"dataset": 10**6}, "dataset"),
        ({"period_from": "2025-02-01", "period_to": "2025-01-01"}, "period_to"),
        ({"categories": [16]}, "categories"),
        ({"suppliers": [10**6]}, "suppliers"),
        ({"source": "epa_hub"}, "source"),
        ({"chunk_rows": 5}, "chunk_rows"),  # not an API field
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    api: Any, modify: Callable[[], FactorDataset], body: dict[str, Any], field: str
) -> None:
    modified = modify()
    response = api.post(URL, {"dataset": modified.pk, **body}, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Job.objects.exists()


def test_another_organizations_dataset_and_suppliers_are_unknown(
    api: Any, other_org: Organization, electricity_factor: Any
) -> None:
    theirs = FactorDatasetFactory.create(source="supplier", version="current", basis_year=2025, organization=other_org)
    response = api.post(URL, {"dataset": theirs.pk}, format="json")
    assert response.json() == {"dataset": [f"Unknown factor dataset {theirs.pk}."]}
    supplier = SupplierFactory.create(organization=other_org)
    body = {"dataset": electricity_factor.dataset_id, "suppliers": [supplier.pk]}
    assert api.post(URL, body, format="json").json() == {"suppliers": [f"Unknown supplier id(s): {supplier.pk}."]}


def test_restatement_list_detail_and_lines(api: Any, org: Organization, modify: Callable[[], FactorDataset]) -> None:
    store(org)
    modified = modify()
    job = recalculated(org, modified)
    assert job.state == Job.State.SUCCEEDED, job.errors
    listed = api.get(LIST).json()["results"]
    assert [item["id"] for item in listed] == [job.pk]
    body = api.get(detail(job.pk)).json()
    restatement = Restatement.objects.get()
    assert body["total_before_kg"] == str(restatement.total_before_kg)
    assert body["total_after_kg"] == str(restatement.total_after_kg)
    assert (body["change_pct"], body["significant"], body["emissions_changed"]) == ("10.0000", True, 3)
    assert body["target_dataset"] == {
        "id": modified.pk,
        "source": "desnz",
        "version": "2025-mod",
        "name": modified.name,
        "basis_year": 2025,
    }
    assert set(body["per_category"]) == {"3"} and body["per_category"]["3"]["change_pct"] == "10.0000"
    assert "none" in body["per_supplier"] and len(body["per_supplier"]) == 2
    assert "per_category" not in listed[0]
    page = api.get(lines(job.pk)).json()["results"]
    assert len(page) == 3
    first = page[0]
    assert (first["before_factor"]["dataset_version"], first["after_factor"]["dataset_version"]) == ("2025", "2025-mod")
    assert Decimal(first["after_co2e_kg"]) == Decimal(first["before_co2e_kg"]) * Decimal("1.1")
    assert [line["emission_id"] for line in page] == sorted(line["emission_id"] for line in page)


def test_another_organizations_restatement_is_404(
    other_api: Any, org: Organization, modify: Callable[[], FactorDataset]
) -> None:
    store(org)
    modified = modify()
    job = recalculated(org, modified)
    assert other_api.get(detail(job.pk)).status_code == 404
    assert other_api.get(lines(job.pk)).status_code == 404
    assert other_api.get(LIST).json()["results"] == []


def test_lines_of_a_restatement_that_changed_nothing_are_an_empty_page(
    api: Any, org: Organization, electricity_factor: EmissionFactor
) -> None:
    store(org)
    job = recalculated(org, electricity_factor.dataset)
    response = api.get(lines(job.pk))
    assert (response.status_code, response.json()["results"]) == (200, [])
    assert api.get(lines(10**6)).status_code == 404


def test_query_counts_are_constant(
    api: Any, org: Organization, modify: Callable[[], FactorDataset], django_assert_num_queries: Any, cold_cache: Any
) -> None:
    store(org, months=1)
    modified = modify()
    first = recalculated(org, modified)
    cold_cache()  # the uncached path, token lookup included
    with django_assert_num_queries(2):  # token (user, membership, org joined), page
        assert len(api.get(LIST).json()["results"]) == 1
    cold_cache()  # the uncached path, token lookup included
    with django_assert_num_queries(2):
        assert len(api.get(lines(first.pk)).json()["results"]) == 1
    store(org, months=12)
    with unit_of_work():
        params = recalculation_params(organization=org, target_dataset_id=modified.pk)
        latest = recalculation_run(organization=org, params=params)
    for _ in range(3):  # restatements that changed nothing (the same target again)
        with unit_of_work():
            recalculation_run(organization=org, params=params)
    cold_cache()  # the uncached path, token lookup included
    with django_assert_num_queries(2):
        assert len(api.get(LIST).json()["results"]) == 5
    cold_cache()  # the uncached path, token lookup included
    with django_assert_num_queries(2):
        assert len(api.get(lines(latest.pk)).json()["results"]) == 12


def test_a_viewer_reads_restatements_but_may_not_recalculate(
    org: Organization, modify: Callable[[], FactorDataset]
) -> None:
    from tests.emissions.api.test_permissions import member_api

    store(org)
    modified = modify()
    job = recalculated(org, modified)
    viewer = member_api(org, "viewer")
    assert viewer.get(detail(job.pk)).status_code == 200
    response = viewer.post(URL, {"dataset": modified.pk}, format="json")
    assert response.status_code == 403
    assert "lacks the 'add_restatement' permission" in response.json()["detail"]


def test_a_cursor_out_of_the_id_range_is_a_400(api: Any, org: Organization) -> None:
    # The restatements' keyset is their job (a one-to-one key): its value is range-checked as the job's id is.
    cursor = urlsafe_b64encode(json.dumps([str(2**70)]).encode()).decode()
    response = api.get(LIST, {"after": cursor})
    assert response.status_code == 400
    assert "after" in response.json()
