"""The suite's N+1 scopes, made explicit at the call site instead of patched into Django or the app.

Every test runs inside one django-zeal context (``tests/conftest.py``) and every request gets its
own (the zeal middleware). Within one context a lazy load, or a ``get()``, repeated from the same
line raises ``zeal.NPlusOneError``. The helpers here draw the other boundaries the suite needs:

- ``unit_of_work()``: one context for one unit of work that a test drives itself, such as a
  service call; used only where a test makes several of them and says why at the call site;
- ``call_command()``: Django's ``call_command``, each run in its own context, as a request is;
- ``Client`` / ``APIClient``: the test clients, whose ``login`` and ``force_login`` are test
  setup and are not checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import django.test
import rest_framework.test
from django.contrib.auth.models import User
from django.core.management import BaseCommand
from django.core.management import call_command as django_call_command
from django.test.client import ClientMixin
from zeal import zeal_context, zeal_ignore


@contextmanager
def unit_of_work() -> Iterator[None]:
    """Check the block on its own for N+1 queries, as one request or one command is.

    For a test that performs several independent units of work (say, two calls of a single-row
    service): the one ``get()`` each call makes, from the same line, is not an N+1. Queries within
    the block are still checked, so a service that loads per row inside one call still raises.
    Wrap each unit, never a loop of them: a loop inside one ``unit_of_work()`` is exactly what the
    N+1 check is for.
    """
    with zeal_context():
        yield


def call_command(command: BaseCommand | str, *args: Any, **options: Any) -> str:
    """Django's ``call_command`` in its own ``unit_of_work()``: a command run is one unit of work.

    Two runs of a command in one test each load the same rows once; that is not an N+1, while a
    command that loads per row within one run still raises.
    """
    with unit_of_work():
        return django_call_command(command, *args, **options)


class _UncheckedLoginMixin(ClientMixin):
    """Logging a test client in is test setup, not code under test: it is not checked for N+1.

    (Django's ``Client._login`` reads the new session twice in one call, which the check would
    otherwise report at the test's line.) The async ``alogin`` / ``aforce_login`` are not covered.
    """

    def login(self, **credentials: Any) -> bool:
        with zeal_ignore():
            return super().login(**credentials)

    def force_login(self, user: User, backend: str | None = None) -> None:
        with zeal_ignore():
            super().force_login(user, backend)


class Client(_UncheckedLoginMixin, django.test.Client):
    """Django's test client; use it (or the ``client`` fixture) in tests that log in."""


class APIClient(_UncheckedLoginMixin, rest_framework.test.APIClient):
    """DRF's test client; use it in tests that log in."""


class Clock:
    """A settable clock (``clock.now``) standing still until a test moves it: for the throttles' windows
    (``perf.throttle``) and their circuit's pause, so no test depends on when it runs."""

    def __init__(self, now: float = 1_000_000.5) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
