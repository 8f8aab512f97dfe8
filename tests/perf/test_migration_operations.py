"""perf.migration_operations: concurrent index builds on PostgreSQL, plain ones elsewhere."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from django.apps import apps
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.migrations.state import ProjectState

from perf.migration_operations import AddIndexConcurrentlyIfPostgres


class RecordingEditor:
    """Stands in for a schema editor: records add_index calls and their keyword arguments."""

    def __init__(self, vendor: str) -> None:
        self.connection = SimpleNamespace(vendor=vendor, alias="default", in_atomic_block=False)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def add_index(self, model: Any, index: models.Index, **kwargs: Any) -> None:
        self.calls.append((index.name, kwargs))


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
