"""What a kind of job provides to the runner (``emissions.jobs.runner``), and where each kind lives.

A kind's ``plan`` splits the job into chunk payloads; ``run_chunk`` does one chunk's work inside the transaction that
marks it done (so it must write nothing outside the database, or write it idempotently: a killed chunk is rerun from
the start); ``finish`` runs once, in one transaction, when every chunk is done, and makes the work visible;
``discard`` removes what the chunks staged when the job fails or is cancelled. Work staged by chunks stays invisible
to every reader until ``finish`` commits.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings

if TYPE_CHECKING:
    from emissions.models import Job, JobChunk

# Job.Kind value -> the module whose ``KIND`` implements it (imported on first use, in the web and in workers alike).
KIND_MODULES: dict[str, str] = {
    "import": "emissions.jobs.imports",
    "recalculation": "emissions.jobs.recalculation",
}


@dataclass(frozen=True)
class Plan:
    """A job's chunks (one payload each, in order) and, when known up front, the rows they cover."""

    chunks: list[dict[str, Any]]
    rows_total: int | None = None


@dataclass(frozen=True)
class ChunkOutcome:
    """What a chunk did: rows processed, and its problems (``errors`` may hold only the first of ``error_count``)."""

    rows: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int | None = None

    @property
    def total_errors(self) -> int:
        return len(self.errors) if self.error_count is None else self.error_count


class JobFailed(Exception):
    """The job cannot succeed (bad input found while planning or finishing); ``errors`` say why, in the job's shape."""

    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class JobKind(Protocol):
    def plan(self, job: Job) -> Plan: ...

    def run_chunk(self, job: Job, chunk: JobChunk) -> ChunkOutcome: ...

    def finish(self, job: Job) -> dict[str, Any]: ...

    def discard(self, job: Job) -> None: ...


def kind_for(name: str) -> JobKind:
    """The implementation of job kind ``name``; ``KeyError`` for a kind this code does not know."""
    module = importlib.import_module({**KIND_MODULES, **settings.JOB_KIND_MODULES}[name])
    kind: JobKind = module.KIND
    return kind
