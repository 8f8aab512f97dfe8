"""perf.tenants: naming organizations by slug, and the one registration."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.core.exceptions import ImproperlyConfigured

from perf import tenants
from perf.tenants import Tenants, UnknownTenants


@dataclass(frozen=True)
class Org:
    pk: int
    slug: str


ORGS = [Org(1, "acme"), Org(2, "globex"), Org(3, "initech")]
LOOKUP = Tenants(
    by_slug=lambda slugs: [org for org in reversed(ORGS) if org.slug in slugs],  # any order
    active=lambda: ORGS[:2],
    largest=lambda: ORGS[0],
)


def test_named_keeps_the_order_given_and_drops_repeats() -> None:
    assert LOOKUP.named(["initech", "acme", "initech"]) == [ORGS[2], ORGS[0]]
    assert LOOKUP.named([]) == []


def test_named_lists_every_unknown_slug() -> None:
    with pytest.raises(UnknownTenants, match=r"^Unknown organization\(s\): nope, nada\.$") as raised:
        LOOKUP.named(["acme", "nope", "nada", "nope"])
    assert raised.value.slugs == ["nope", "nada"]


def test_one_app_registers_the_organizations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tenants, "_registered", None)
    with pytest.raises(ImproperlyConfigured, match="No installed app registers its organizations"):
        tenants.registered()
    tenants.register(LOOKUP)
    tenants.register(LOOKUP)  # the same again (ready() run twice) is harmless
    assert tenants.registered() is LOOKUP
    with pytest.raises(ValueError, match="already registered"):
        tenants.register(Tenants(by_slug=lambda slugs: [], active=list, largest=lambda: None))
    assert tenants.registered() is LOOKUP
