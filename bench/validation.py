"""The validation benchmark (``manage.py bench_validation``): DRF's deep copy of an input serializer's fields
against ``perf.serializer_fields.CopiedFieldsMixin``, side by side in one process.

DRF gives each serializer instance a deep copy of the class's declared fields, and a field's deep copy calls its
class again with the arguments it was made with. ``CopiedFieldsMixin`` (on every ``KnownFieldsSerializer``)
copies the leaf fields' attributes instead. Three rows, each timed in rounds (``measure.measure_interleaved``:
every round runs both sides once, in turn), a round being ``REPEAT`` calls over the organization's newest
stored activity lines, as clients send them (``bench.db.api_payload``):

- validating one calculation input (``CalculationInputSerializer``, a new serializer per input);
- validating one activity input (``ActivityInputSerializer``);
- the whole ``POST /api/v1/calculate/`` request in-process (``APIClient``: middleware, DRF, token
  authentication, validation, the calculation, the answer; no network).

The DRF side runs with the mixin's ``get_fields`` replaced by DRF's own (the next class's in the method
resolution order) for the duration of its call. Every line must validate, and both sides' validated data and
answers (the last round's) must be equal, else the run fails. The database is only read; the API token is made
inside a transaction that is rolled back (as ``bench_serialization`` does).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

from django.urls import reverse
from django.utils import timezone
from rest_framework import serializers
from rest_framework.test import APIClient

from bench import measure
from bench.db import activity_inputs, api_payload
from bench.measure import BenchError, Measurement, _ms
from bench.serialization import _member_token
from emissions.inputs import ActivityInputSerializer, CalculationInputSerializer
from emissions.models import Organization, Supplier
from perf.serializer_fields import CopiedFieldsMixin

DEFAULT_OUT = "docs/benchmarks/validation.md"
DEFAULT_ORG = "bench"
DEFAULT_RUNS = 30
# Calls per side per round: a single validation takes a fraction of a millisecond.
REPEAT = 50
# Distinct payloads cycled through (the organization's newest activity lines).
PAYLOADS = 20
# What the activity input has that a calculation input does not.
_ACTIVITY_ONLY = ("period_start", "period_end", "external_ref")


def _drf_get_fields(self: Any) -> Any:
    """DRF's own ``get_fields`` for a serializer using ``CopiedFieldsMixin``: the next class's in its MRO."""
    return super(CopiedFieldsMixin, self).get_fields()


@contextmanager
def _drf_fields() -> Iterator[None]:
    """Inside the block, serializers using ``CopiedFieldsMixin`` get DRF's deep copies of their fields."""
    copied = CopiedFieldsMixin.get_fields
    CopiedFieldsMixin.get_fields = _drf_get_fields  # type: ignore[method-assign]  # restored below
    try:
        yield
    finally:
        CopiedFieldsMixin.get_fields = copied  # type: ignore[method-assign]


@dataclass
class Case:
    """One row: what is timed, and the two sides' measurements (DRF's deep copy, copied fields)."""

    name: str
    drf: Measurement
    copied: Measurement

    @property
    def ratio(self) -> float:
        return self.drf.median / max(self.copied.median, 1e-9)


class ValidationBenchmark:
    """One run on organization ``org_slug``; ``run()`` measures, checks and writes the report.

    After ``run()``: ``cases`` (each row's measurements) and ``markdown`` (the report as written)."""

    def __init__(self, org_slug: str, *, runs: int = DEFAULT_RUNS, stdout: Any = None) -> None:
        """Precondition: ``runs >= 1``."""
        if runs < 1:
            raise ValueError(f"runs must be at least 1; got {runs}.")
        self.org_slug, self.runs = org_slug, runs
        self.stdout = stdout if stdout is not None else StringIO()

    def run(self, out: Path) -> list[Case]:
        org = Organization.objects.filter(slug=self.org_slug).first()
        if org is None:
            raise BenchError(f"No organization '{self.org_slug}'; seed it first (manage.py seed_demo).")
        activities = [api_payload(item) for item in activity_inputs(org, PAYLOADS)]
        if not activities:
            raise BenchError(f"Organization '{org.slug}' has no activities; seed it first (manage.py seed_demo).")
        calculations = [{k: v for k, v in body.items() if k not in _ACTIVITY_ONLY} for body in activities]
        context = {
            "organization_id": org.pk,
            "supplier_ids": set(Supplier.objects.for_org(org).values_list("pk", flat=True)),
        }
        cases = [
            self._validation("validate one calculation input", CalculationInputSerializer, calculations, context),
            self._validation("validate one activity input", ActivityInputSerializer, activities, context),
            self._request(org, calculations),
        ]
        self.cases = cases
        self.payloads = len(activities)
        self.markdown = self._markdown(cases, org)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.markdown, encoding="utf-8")
        return cases

    # -- measurement ---------------------------------------------------------------------------

    def _pair(self, name: str, one: Callable[[Any], Any], payloads: list[dict[str, Any]]) -> Case:
        """Both sides of ``one`` (a function of one payload), ``REPEAT`` calls a round; their results must agree."""

        def copied() -> list[Any]:
            return [one(payloads[i % len(payloads)]) for i in range(REPEAT)]

        def drf() -> list[Any]:
            with _drf_fields():
                return copied()

        self.stdout.write(f"Measuring {name}: {self.runs} rounds of 2 x {REPEAT} ...\n")
        drf_side, copied_side = measure.measure_interleaved([drf, copied], runs=self.runs)
        if drf_side.result != copied_side.result:
            raise BenchError(f"{name}: the two sides' results differ; the benchmark would compare different work.")
        per_call = [
            Measurement(samples=[s / REPEAT for s in side.samples], queries=side.queries, result=side.result)
            for side in (drf_side, copied_side)
        ]
        return Case(name, *per_call)

    def _validation(
        self, name: str, serializer: type[serializers.Serializer], payloads: list[dict[str, Any]], context: Any
    ) -> Case:
        def one(payload: dict[str, Any]) -> Any:
            validator = serializer(data=payload, context=context)
            valid = validator.is_valid()
            return valid, dict(validator.errors), repr(validator.validated_data) if valid else None

        case = self._pair(name, one, payloads)
        invalid = [result for result in case.copied.result if not result[0]]
        if invalid:
            raise BenchError(f"{name}: a stored activity line did not validate: {invalid[0][1]}")
        return case

    def _request(self, org: Organization, payloads: list[dict[str, Any]]) -> Case:
        url = reverse("calculate")
        # REPEAT x rounds requests of one token exceed its request limits.
        with _member_token(org) as key, measure.api_client_settings():
            client = APIClient(HTTP_AUTHORIZATION=f"Token {key}", HTTP_X_REQUEST_ID="bench-validation")

            def one(payload: dict[str, Any]) -> Any:
                response = client.post(url, payload, format="json")
                if response.status_code != 200:
                    raise BenchError(f"POST {url} answered {response.status_code}: {response.content[:300]!r}")
                return response.content

            return self._pair(f"POST {url}, whole request", one, payloads)

    # -- report --------------------------------------------------------------------------------

    def _command(self) -> str:
        args = ["manage.py", "bench_validation", "--org", self.org_slug, "--runs", str(self.runs)]
        return f"DJANGO_SETTINGS_MODULE={measure.SETTINGS_MODULE} python {shlex.join(args)}"

    def _markdown(self, cases: list[Case], org: Organization) -> str:
        lines = [
            "# Validation benchmark: DRF's deep copy of a serializer's fields vs copied fields",
            "",
            "Generated by `manage.py bench_validation`; do not edit by hand. One process, side by side: each round",
            f"runs both columns once, in turn, each {REPEAT} calls over the organization's {self.payloads} newest",
            f"activity lines as a client sends them; times are per call, medians of {self.runs:,} rounds after one",
            "warm-up round. *DRF* gives each serializer a deep copy of its declared fields (every field's class",
            "called again with its arguments); *copied* is `perf.serializer_fields.CopiedFieldsMixin` (leaf fields'",
            "attributes copied). Every line validated (one that does not fails the run), and the two sides' validated",
            "data and answers in the last round were checked equal.",
            "",
            "| case | DRF | copied | DRF / copied |",
            "|---|---|---|---|",
        ]
        lines += [f"| {c.name} | {_ms(c.drf.median)} | {_ms(c.copied.median)} | {c.ratio:.2f}x |" for c in cases]
        machine = measure.machine_description({})
        lines += ["", "## Machine", ""]
        lines += [f"- **{key}**: {value}" for key, value in machine.items()]
        lines += ["", "## Reproduce", "", "```sh", self._command(), "```", ""]
        lines += [f"Run on {timezone.now():%Y-%m-%d %H:%M} UTC with Python {sys.version.split()[0]}."]
        return "\n".join(lines) + "\n"
