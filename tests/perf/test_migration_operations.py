"""perf.migration_operations: concurrent index builds and drops, and constraints, on PostgreSQL; what others get."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from django.apps import apps
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.migrations.state import ProjectState

from perf.migration_operations import (
    AddConstraintIfPostgres,
    AddIndexConcurrentlyIfPostgres,
    RemoveIndexConcurrentlyIfPostgres,
)


class RecordingEditor:
    """Stands in for a schema editor: records add_index calls and their keyword arguments."""

    def __init__(self, vendor: str) -> None:
        self.connection = SimpleNamespace(vendor=vendor, alias="default", in_atomic_block=False)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def add_index(self, model: Any, index: models.Index, **kwargs: Any) -> None:
        self.calls.append((index.name, kwargs))

    def remove_index(self, model: Any, index: models.Index, **kwargs: Any) -> None:
        self.calls.append((f"drop {index.name}", kwargs))

    def add_constraint(self, model: Any, constraint: models.BaseConstraint) -> None:
        self.calls.append((f"constraint {constraint.name}", {}))


def _run(index: models.Index, vendor: str) -> list[tuple[str, dict[str, Any]]]:
    operation = AddIndexConcurrentlyIfPostgres(model_name="supplier", index=index)
    state = ProjectState.from_apps(apps)
    editor = RecordingEditor(vendor)
    operation.database_forwards("emissions", editor, state, state)
    return editor.calls


def test_postgresql_builds_concurrently() -> None:
    assert _run(models.Index(fields=["name"], name="t_name_idx"), "postgresql") == [
        ("t_name_idx", {"concurrently": True})
    ]


def test_other_databases_get_a_plain_index() -> None:
    assert _run(models.Index(fields=["name"], name="t_name_idx"), "sqlite") == [("t_name_idx", {})]


def test_postgresql_only_index_types_are_skipped_elsewhere() -> None:
    assert _run(GinIndex(fields=["name"], name="t_name_gin"), "sqlite") == []


def _state_with(index: models.Index) -> ProjectState:
    state = ProjectState.from_apps(apps)
    AddIndexConcurrentlyIfPostgres(model_name="supplier", index=index).state_forwards("emissions", state)
    return state


def _drop(index: models.Index, vendor: str) -> list[tuple[str, dict[str, Any]]]:
    operation = RemoveIndexConcurrentlyIfPostgres(model_name="supplier", name=index.name)
    from_state = _state_with(index)
    to_state = from_state.clone()
    operation.state_forwards("emissions", to_state)
    editor = RecordingEditor(vendor)
    operation.database_forwards("emissions", editor, from_state, to_state)
    return editor.calls


def test_postgresql_drops_concurrently_and_other_databases_plainly() -> None:
    index = models.Index(fields=["name"], name="t_name_idx")
    assert _drop(index, "postgresql") == [("drop t_name_idx", {"concurrently": True})]
    assert _drop(index, "sqlite") == [("drop t_name_idx", {})]
    assert _drop(GinIndex(fields=["name"], name="t_name_gin"), "sqlite") == []  # never built there


def test_constraints_are_added_on_postgresql_only() -> None:
    constraint = models.CheckConstraint(condition=models.Q(name__gt=""), name="t_named")
    operation = AddConstraintIfPostgres(model_name="supplier", constraint=constraint)
    state = ProjectState.from_apps(apps)
    calls = {}
    for vendor in ("postgresql", "sqlite"):
        editor = RecordingEditor(vendor)
        operation.database_forwards("emissions", editor, state, state)
        calls[vendor] = editor.calls
    assert calls == {"postgresql": [("constraint t_named", {})], "sqlite": []}
