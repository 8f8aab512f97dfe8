"""The load test's request trace (``bench.loadtest --trace``): where each request's time went, client to server.

locust times a request from before it is sent until its body has been read; the server's timers start when the
application is called. The difference (the kernel's accept queue, a worker busy with another greenlet, the CPU
given to someone else, the response's way back and locust's own event loop) is in no server metric. With
``--trace``, each locust process records its requests under the ``X-Request-ID`` it sends (``locustfile.py``,
``RequestTrace``: method and name, sent, answered, status) and each serving process records the same ids
(``perf/trace.py``, on when ``REQUEST_TRACE_DIR`` is set: when the application was called, when the server had
written the response, whether the request opened its connection; the bulk pool too, for the bulk requests relayed to
it).
``summarize`` joins them by id and splits each request's time:

- *before the application*: from locust sending it until a worker's application was called;
- *in the application*: until the worker had written the response and logged it (for a bulk request, of which *in
  the bulk pool*: until the bulk pool had, the rest being the wait for a slot, the upload and the relay);
- *after*: until locust had read the body.

All are wall-clock times (``time.time()``) of processes on one machine. Requests are split into the ramp (sent while
users were still starting: ``users / spawn rate`` seconds from the first request) and the steady state after it, and
the requests that opened a connection (which waited in the accept queue: a user's first, and any after the server
closed the user's idle connection, ``keepalive`` seconds on: the ERP clients' pauses, a long ``Retry-After``) are
shown apart.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy

from bench.measure import table

# Endpoints shown one by one (the most requested, steady state); the rest are in the totals.
TOP_ENDPOINTS = 20


class TraceError(RuntimeError):
    """A trace directory that cannot be read (no client records, a malformed line); the message says which."""


@dataclass(frozen=True, slots=True)
class Traced:
    """One request as both sides recorded it (the server's times are None when it has no record of it)."""

    name: str
    sent: float
    answered: float
    status: int
    failed: bool
    app_start: float | None = None
    app_done: float | None = None
    opened: bool | None = None  # whether it opened its connection (the worker's record; None: not known)
    bulk_start: float | None = None
    bulk_done: float | None = None

    @property
    def total(self) -> float:
        return self.answered - self.sent

    @property
    def before(self) -> float | None:
        return _between(self.sent, self.app_start)

    @property
    def in_app(self) -> float | None:
        return _between(self.app_start, self.app_done)

    @property
    def after(self) -> float | None:
        return _between(self.app_done, self.answered)

    @property
    def in_bulk(self) -> float | None:
        return _between(self.bulk_start, self.bulk_done)


def _between(start: float | None, end: float | None) -> float | None:
    """Seconds from ``start`` to ``end``; None when either side did not record its time."""
    return None if start is None or end is None else end - start


def _lines(paths: Iterable[Path], fields: int) -> Iterable[list[str]]:
    for path in sorted(paths):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            parts = line.split("\t")
            if len(parts) != fields:
                raise TraceError(f"{path.name}, line {number}: {len(parts)} fields, expected {fields}")
            yield parts


def _server_times(paths: Iterable[Path]) -> dict[str, tuple[float, float, bool | None]]:
    # A request id recorded twice by one role (never, unless a client reused one): the first record stands.
    times: dict[str, tuple[float, float, bool | None]] = {}
    for request_id, started, done, _status, opened in _lines(paths, 5):
        times.setdefault(request_id, (float(started), float(done), {"1": True, "0": False}.get(opened)))
    return times


def read(directory: Path) -> list[Traced]:
    """The joined records of ``directory`` (``client-*.tsv``, ``main-*.tsv``, ``bulk-*.tsv``), in sending order."""
    clients = list(directory.glob("client-*.tsv"))
    if not clients:
        raise TraceError(f"no client records (client-*.tsv) in {directory}")
    main, bulk = _server_times(directory.glob("main-*.tsv")), _server_times(directory.glob("bulk-*.tsv"))
    traced = []
    for request_id, name, sent, answered, status, failed in _lines(clients, 6):
        app, relayed = main.get(request_id), bulk.get(request_id)
        app_start, app_done, opened = app or (None, None, None)
        bulk_start, bulk_done, _ = relayed or (None, None, None)
        client = (name, float(sent), float(answered), int(status), failed == "1")
        traced.append(Traced(*client, app_start, app_done, opened, bulk_start, bulk_done))
    traced.sort(key=lambda record: record.sent)
    return traced


def _spread(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p95 and p99 of ``values`` by nearest rank (a value of the sample: the smallest with at least that share
    of the values at or below it), as locust reports its percentiles; None when there are none."""
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    p50, p95, p99 = numpy.percentile(values, [50, 95, 99], method="inverted_cdf")
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99)}


def group(records: Sequence[Traced]) -> dict[str, Any]:
    """Counts and p50/p95/p99 (seconds) of each part of ``records``' time; ``before_share``: the part of the clients'
    total time (summed) spent before the application, over the requests the server recorded."""
    served = [record for record in records if record.app_start is not None and record.app_done is not None]
    bulk = [record for record in served if record.bulk_start is not None and record.bulk_done is not None]
    total_served = sum(record.total for record in served)
    return {
        "requests": len(records),
        "unrecorded": len(records) - len(served),
        "failed": sum(record.failed for record in records),
        "total": _spread([record.total for record in records]),
        "before": _spread([record.before for record in served]),  # type: ignore[misc]  # served: not None
        "in_app": _spread([record.in_app for record in served]),  # type: ignore[misc]
        "after": _spread([record.after for record in served]),  # type: ignore[misc]
        "before_share": (sum(record.before for record in served) / total_served) if total_served > 0 else None,  # type: ignore[misc]
        "bulk_requests": len(bulk),
        "in_bulk": _spread([record.in_bulk for record in bulk]),  # type: ignore[misc]
        "relay": _spread([record.in_app - record.in_bulk for record in bulk]),  # type: ignore[operator]
    }


def summarize(records: Sequence[Traced], *, ramp_seconds: float) -> dict[str, Any]:
    """The trace's figures: the ramp and the steady state, all requests and those that opened a connection, and the
    steady state's endpoints (the ``TOP_ENDPOINTS`` most requested)."""
    if not records:
        raise TraceError("the trace holds no request")
    start = records[0].sent
    phases: dict[str, list[Traced]] = {"ramp": [], "steady": []}
    for record in records:
        phases["ramp" if record.sent - start < ramp_seconds else "steady"].append(record)
    groups = {}
    for phase, members in phases.items():
        groups[f"{phase}: all requests"] = group(members)
        groups[f"{phase}: requests that opened a connection"] = group([record for record in members if record.opened])
    by_name: dict[str, list[Traced]] = defaultdict(list)
    for record in phases["steady"]:
        by_name[record.name].append(record)
    popular = sorted(by_name, key=lambda name: (-len(by_name[name]), name))[:TOP_ENDPOINTS]
    return {
        "requests": len(records),
        "ramp_seconds": ramp_seconds,
        "groups": groups,
        "endpoints": {name: group(by_name[name]) for name in popular},
    }


def ms(spread: dict[str, float | None], *keys: str) -> str:
    values = [spread[key] for key in keys]
    if any(value is None for value in values):
        return "-"
    return " / ".join(f"{value * 1000:,.0f}" for value in values)  # type: ignore[operator]


def _row(label: str, figures: dict[str, Any]) -> list[str]:
    share = figures["before_share"]
    bulk = (
        f"{figures['bulk_requests']:,}: {ms(figures['in_bulk'], 'p50', 'p95')} / {ms(figures['relay'], 'p50', 'p95')}"
        if figures["bulk_requests"]
        else "-"
    )
    return [
        label,
        f"{figures['requests']:,}",
        f"{figures['unrecorded']:,}",
        ms(figures["total"], "p50", "p95", "p99"),
        ms(figures["before"], "p50", "p95", "p99"),
        ms(figures["in_app"], "p50", "p95", "p99"),
        ms(figures["after"], "p50", "p95"),
        "-" if share is None else f"{share * 100:.0f} %",
        bulk,
    ]


HEADER = (
    "requests",
    "count",
    "not seen by the server",
    "locust p50 / p95 / p99 ms",
    "before the application p50 / p95 / p99 ms",
    "in the application p50 / p95 / p99 ms",
    "after p50 / p95 ms",
    "share of locust's time before the application",
    "relayed to the bulk pool: in it p50 / p95 ms / relay and wait p50 / p95 ms",
)


EXPLANATION = (
    "Every request locust sent, joined by its `X-Request-ID` with the server's record of it (bench/trace.py): *before "
    "the application* is from locust sending it until a worker's application was called (the accept queue, a busy "
    "worker, the CPU), *in the application* until the worker had written the response (and logged it), *after* until "
    "locust had read it; for a bulk request, *in it* is the bulk pool's time and *relay and wait* the rest of the "
    "worker's (a slot, the upload, the relay). Not seen by the server: no record of it (gunicorn refused it before "
    "the application, the application failed to answer, or locust gave up before the server recorded it). The ramp "
    "is the first {ramp:g} s (users still starting). A request that opened a connection (a user's first, or one after "
    "the server closed the user's idle connection) waited in the accept queue."
)


def tables(summary: dict[str, Any]) -> list[str]:
    """The trace's two tables (the ramp and the steady state; the steady state per endpoint), as Markdown lines."""
    lines = table(HEADER, [_row(label, figures) for label, figures in summary["groups"].items()])
    lines += ["", "Steady state, per endpoint (the most requested):", ""]
    lines += table(HEADER, [_row(name, figures) for name, figures in summary["endpoints"].items()])
    return lines


def render(summary: dict[str, Any], command: str) -> str:
    """``summary`` as the trace's Markdown page."""
    lines = [
        "# Request trace: where each request's time went",
        "",
        f"Generated by `{command}`. " + EXPLANATION.format(ramp=summary["ramp_seconds"]),
        "",
        *tables(summary),
    ]
    return "\n".join(lines) + "\n"
