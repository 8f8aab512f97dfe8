"""Migration operations that build and drop PostgreSQL indexes without locking writers, and degrade elsewhere.

``AddIndexConcurrently`` (and ``RemoveIndexConcurrently``) pass ``concurrently=True`` to the schema
editor, which only the PostgreSQL backend understands. The embedded default (SQLite) runs the same
migrations, so these operations fall back to a plain ``CREATE INDEX`` (``DROP INDEX``) there, and skip
PostgreSQL-only index types (GIN/GiST, trigram operator classes) that SQLite cannot build at all.
"""

from __future__ import annotations

from typing import Any

from django.contrib.postgres.indexes import PostgresIndex
from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db.migrations.operations import AddConstraint, AddIndex, RemoveIndex


class AddIndexConcurrentlyIfPostgres(AddIndexConcurrently):
    """``CREATE INDEX CONCURRENTLY`` on PostgreSQL; a plain index (or nothing, for PostgreSQL-only types) elsewhere."""

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        elif not isinstance(self.index, PostgresIndex):
            AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        elif not isinstance(self.index, PostgresIndex):
            AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


class RemoveIndexConcurrentlyIfPostgres(RemoveIndexConcurrently):
    """``DROP INDEX CONCURRENTLY`` on PostgreSQL; a plain ``DROP INDEX`` elsewhere (nothing, for PostgreSQL-only
    types, which were never built there)."""

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        elif not isinstance(self._index(from_state, app_label), PostgresIndex):
            RemoveIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        elif not isinstance(self._index(to_state, app_label), PostgresIndex):
            RemoveIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)

    def _index(self, state: Any, app_label: str) -> Any:
        return state.models[app_label, self.model_name_lower].get_index_by_name(self.name)


class AddConstraintIfPostgres(AddConstraint):
    """``ADD CONSTRAINT`` on PostgreSQL; on other databases the state only.

    SQLite cannot add a constraint to a table: Django rebuilds the table, and the rebuild re-creates every
    index of the model's state, PostgreSQL-only ones (trigram GIN) included, which SQLite cannot build.
    The embedded SQLite default is for a first run; PostgreSQL, which production and the tests use,
    enforces the constraint.
    """

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
