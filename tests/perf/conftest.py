"""Fixtures shared by the perf tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis import connection as redis_connection
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


def command_names(packed: bytes) -> list[str]:
    """The names of the RESP commands in ``packed`` (each an array of bulk strings, the name first), in order."""
    names: list[str] = []
    at = 0
    while at < len(packed):
        end = packed.index(b"\r\n", at)
        count = int(packed[at + 1 : end])  # "*<count>"
        at = end + 2
        for index in range(count):
            end = packed.index(b"\r\n", at)
            length = int(packed[at + 1 : end])  # "$<length>"
            if index == 0:
                names.append(packed[end + 2 : end + 2 + length].decode().lower())
            at = end + 2 + length + 2
    return names


class RoundTrips:
    """Records each round trip to Redis (one send: a command, or a pipeline's commands) as its commands' names."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.trips: list[list[str]] = []
        send = redis_connection.AbstractConnection.send_packed_command
        trips = self.trips

        def recorded(connection: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
            packed = command if isinstance(command, bytes | bytearray) else b"".join(bytes(part) for part in command)
            trips.append(command_names(bytes(packed)))
            return send(connection, command, *args, **kwargs)

        monkeypatch.setattr(redis_connection.AbstractConnection, "send_packed_command", recorded)


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> RoundTrips:
    """The round trips to Redis made from here on (``.trips``; ``.trips.clear()`` to start counting anew)."""
    return RoundTrips(monkeypatch)
