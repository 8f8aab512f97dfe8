"""The batch operations behind the API: a list of items in, one outcome per item (or one write) out.

Each item reaches these functions already validated by the caller (the API's serializers): either
the input it describes or the field errors its validation found. Items stay in the order they were
submitted, so an outcome or an error's index refers to the submitted list.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction

from calculator.types import CalculationError, CalculationInput
from emissions.calculation import FactorResolver, Result, calculate
from emissions.models import ActivityRecord, Organization
from emissions.services.activities import (
    ActivitiesInvalidError,
    ActivityInput,
    FieldErrors,
    ItemError,
    activities_calculate,
    activities_create,
)
from perf.admission import cooperate


def calculations_run(
    *, organization: Organization, items: Sequence[CalculationInput | FieldErrors]
) -> list[Result | FieldErrors]:
    """Calculate every item with ``organization``'s factors; nothing is stored.

    Each outcome is the item's result or its field errors, in order: an item passed as its field
    errors comes back as it was. One resolver serves the batch, primed with everything the items
    name (``FactorResolver.prime``: pinned factors, activities, suppliers, spend years), so the
    batch's lookups cost one cache read (or query) per kind instead of one per distinct selector,
    and repeated ones hit memory.
    """
    resolver = FactorResolver(organization)
    resolver.prime(item for item in items if not isinstance(item, dict))
    outcomes: list[Result | FieldErrors] = []
    for item in items:
        # A long batch shares the worker's CPU with its other requests (perf.admission.cooperate).
        cooperate()
        if isinstance(item, dict):
            outcomes.append(item)
            continue
        try:
            outcomes.append(calculate(item, organization=organization, resolver=resolver))
        except CalculationError as exc:
            outcomes.append(exc.errors)
    return outcomes


@transaction.atomic
def activities_submit(
    *, organization: Organization, items: Sequence[ActivityInput | FieldErrors]
) -> list[ActivityRecord]:
    """Store every item with its emission, all or nothing, through ``activities_create`` (one transaction).

    Raises ``ActivitiesInvalidError`` when any item fails, before anything is written: it lists, by
    index in ``items``, the errors of the items passed as field errors and the calculation errors of
    all the others, so one answer shows every problem of the list.
    """
    invalid = [ItemError(index, item) for index, item in enumerate(items) if isinstance(item, dict)]
    valid = [(index, item) for index, item in enumerate(items) if not isinstance(item, dict)]
    if not invalid:
        return activities_create(organization=organization, items=[item for _, item in valid])
    outcomes = activities_calculate(organization=organization, items=[item for _, item in valid])
    failed = [
        ItemError(index, outcome)
        for (index, _), outcome in zip(valid, outcomes, strict=True)
        if isinstance(outcome, dict)
    ]
    raise ActivitiesInvalidError(sorted(invalid + failed, key=lambda error: error.index))
