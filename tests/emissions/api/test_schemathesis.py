"""The API against its own OpenAPI schema: schemathesis, every check, against the app served in process.

What ``schemathesis run`` does against a server (its coverage, fuzzing and stateful phases, with the project's
``schemathesis.toml``), over HTTP to pytest-django's ``live_server`` (the WSGI app in a thread of this process;
schemathesis's own WSGI transport passes ``max_redirects`` to werkzeug and fails every request its auth check
repeats), on an organization seeded by ``seed_demo`` and a real token of one of its members. Any
failed check fails the test: a 5xx, a status, content type, header or body the schema does not document, a
schema-valid request refused or a schema-violating one accepted. Bounded and reproducible: a few examples per
operation and mode, the coverage phase's schema violations only (``run_schemathesis``), no deadline (schemathesis
sets none), derandomized with one fixed seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events

from emissions.models import Organization
from tests.emissions.management.test_seed_demo import factors, seed  # noqa: F401  # the fixture and the seeding
from tests.factories import MembershipFactory

CONFIG = Path(__file__).resolve().parents[3] / "schemathesis.toml"
MAX_EXAMPLES = 10
SEED = 20261204


def run_schemathesis(url: str, token: str) -> tuple[int, list[str]]:
    """``(cases run, failures)`` of every phase against the server at ``url``, each failure as ``"<operation>: <code>
    <title>"`` (or an error's text)."""
    # As `schemathesis run --checks all --max-examples N --generation-deterministic --seed S -H ...` sets them.
    config = SchemathesisConfig.from_path(str(CONFIG))
    config.update(seed=SEED, max_failures=None)
    config.projects.override.update(headers={"Authorization": f"Token {token}"})
    config.projects.override.checks.update(included_check_names=["all"])
    config.projects.override.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)
    # The bound on the run's time: the coverage phase's deterministic cases are its schema violations only (each
    # parameter and field out of its type, bounds, pattern, enum); the valid ones are the fuzzing phase's. Both
    # halves, a minute more, are what `python -m bench.fuzz` (the CLI) runs.
    config.projects.override.phases.coverage.generation.update(modes=[GenerationMode.NEGATIVE])
    schema = schemathesis.openapi.from_url(f"{url}/api/schema/", config=config)
    cases, failures = 0, []
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            cases += len(event.recorder.cases)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        failures.append(f"{event.recorder.label}: {failure.code} {failure.title}")
        elif isinstance(event, events.NonFatalError):
            failures.append(f"{event.label}: error {event.info.format()}")
        elif isinstance(event, events.FatalError):
            failures.append(f"run: error {event.exception!r}")
    return cases, sorted(set(failures))


@pytest.mark.usefixtures("factors")
@pytest.mark.django_db(transaction=True)  # the server thread reads what the test wrote
def test_the_api_conforms_to_its_schema(live_server: Any) -> None:
    seed(activities=200)
    organization = Organization.objects.get(slug="demo")
    member = MembershipFactory.create(organization=organization)
    token = Token.objects.create(user=member.user)

    cases, failures = run_schemathesis(live_server.url, token.key)

    assert failures == [], "\n".join(failures)
    assert cases > 500  # every operation was exercised, not skipped
