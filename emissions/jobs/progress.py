"""How far a job is and how long it took, as the API, the admin and ``manage.py jobs`` show it (from the job row)."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_DOWN, Decimal

from django.utils import timezone

from emissions.models import Job


def job_percent(job: Job) -> int:
    """How far the job is, 0 to 100, rounded down (100 only once it succeeded): by rows when their total is known,
    else by chunks. A job that failed or was cancelled keeps the figure it had reached."""
    if job.state == Job.State.SUCCEEDED:
        return 100
    done, total = (job.rows_done, job.rows_total) if job.rows_total else (job.chunks_done, job.chunks_total)
    if not total:
        return 0
    return min(99, int((Decimal(done) * 100 / Decimal(total)).to_integral_value(rounding=ROUND_DOWN)))


def job_duration(job: Job, now: dt.datetime | None = None) -> Decimal | None:
    """Seconds from the job's start to its end (to ``now`` while it runs), to the millisecond; None before it
    started (a queued job, or one cancelled while queued)."""
    if job.started_at is None:
        return None
    end = job.finished_at or now or timezone.now()
    microseconds = max(0, (end - job.started_at) // dt.timedelta(microseconds=1))
    return (Decimal(microseconds) / Decimal(1_000_000)).quantize(Decimal("0.001"), rounding=ROUND_DOWN)


def duration_text(seconds: Decimal | None) -> str:
    """``1:02:03`` (hours), ``2:03`` (minutes) or ``3.2 s``; ``-`` for no duration."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds.quantize(Decimal('0.1'), rounding=ROUND_DOWN)} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def rows_text(job: Job) -> str:
    """``rows done / total`` (``?`` for a total not known yet)."""
    total = "?" if job.rows_total is None else f"{job.rows_total:,}"
    return f"{job.rows_done:,} / {total}"
