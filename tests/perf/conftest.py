"""Fixtures shared by the perf tests."""

from __future__ import annotations

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
