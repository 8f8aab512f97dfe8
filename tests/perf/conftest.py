"""Fixtures shared by the perf tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rest_framework.views import APIView


@pytest.fixture
def drf_requests(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths DRF's request cycle ran for (APIView.initial: negotiation, authentication, permissions)."""
    seen: list[str] = []
    initial = APIView.initial

    def counting(self: APIView, request: Any, *args: Any, **kwargs: Any) -> None:
        seen.append(request.path)
        initial(self, request, *args, **kwargs)

    monkeypatch.setattr(APIView, "initial", counting)
    return seen


@pytest.fixture
def admission_gate(settings: Any) -> Iterator[Callable[..., None]]:
    """``admission_gate(ADMISSION_...=value, ...)``: set admission settings and start from a fresh gate (and end with
    one: the gate is per process)."""
    from perf import admission

    def configure(**values: Any) -> None:
        for name, value in values.items():
            setattr(settings, name, value)
        admission.reset()

    yield configure
    admission.reset()
