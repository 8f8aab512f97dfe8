"""``manage.py jobs``: see and control jobs from a shell (docs/jobs.md): list, show, cancel, wait, resume.

An operator's view: every organization's jobs unless ``--org`` names one. ``wait`` exits 0 when the job succeeded
and 1 when it failed or was cancelled, so a script can chain on it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from emissions.jobs.progress import duration_text, job_duration, job_percent, rows_text
from emissions.models import Job, JobQuerySet, Organization
from emissions.services.jobs import JobFinishedError, job_cancel
from emissions.tasks import jobs_resume

LIST_COLUMNS = ("id", "organization", "kind", "state", "progress", "rows done / total", "errors", "by", "created")


def when(moment: Any) -> str:
    return "-" if moment is None else timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S")


def progress_line(job: Job) -> str:
    """One line of where ``job`` stands: state, percent, chunks, rows, errors, duration."""
    return (
        f"job {job.pk} {job.state}: {job_percent(job)}%, chunks {job.chunks_done}/{job.chunks_total}, "
        f"rows {rows_text(job)}, {job.error_count} error(s), {duration_text(job_duration(job))}"
    )


class Command(BaseCommand):
    help = "See and control jobs (imports, recalculations): list, show ID, cancel ID, wait ID, resume."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        listing = actions.add_parser("list", help="Jobs, newest first")
        listing.add_argument("--org", help="Only this organization's (its slug)")
        listing.add_argument("--state", nargs="+", choices=Job.State.values, help="Only jobs in these states")
        listing.add_argument("--kind", choices=Job.Kind.values, help="Only jobs of this kind")
        listing.add_argument("--limit", type=int, default=50, help="At most this many (default 50)")
        show = actions.add_parser("show", help="One job: parameters, progress, problems, result")
        show.add_argument("id", type=int)
        show.add_argument("--errors", type=int, default=20, help="How many of its problems to print (default 20)")
        cancel = actions.add_parser("cancel", help="Cancel a queued or running job (its staged work is discarded)")
        cancel.add_argument("id", type=int)
        wait = actions.add_parser(
            "wait",
            help="Print a job's progress until it finishes; exit 0 if it succeeded, 1 if it failed or was cancelled",
        )
        wait.add_argument("id", type=int)
        wait.add_argument("--interval", type=float, default=2.0, help="Seconds between looks (default 2)")
        wait.add_argument("--timeout", type=float, help="Give up (exit 1) after this many seconds (default: never)")
        actions.add_parser("resume", help="Send again what every unfinished job waits for (safe to repeat)")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "list":
            self.list(options)
        elif action == "resume":
            count = jobs_resume()
            self.stdout.write(f"Re-sent the next step of {count} unfinished job(s).")
        else:
            job = self.job(options["id"])
            if action == "show":
                self.show(job, options["errors"])
            elif action == "cancel":
                self.cancel(job)
            else:
                self.wait(job, options["interval"], options["timeout"])

    def job(self, job_id: int) -> Job:
        job = Job.objects.with_related().select_related("organization").filter(pk=job_id).first()
        if job is None:
            raise CommandError(f"No job {job_id}.")
        return job

    def list(self, options: dict[str, Any]) -> None:
        if options["limit"] < 1:
            raise CommandError("--limit: must be at least 1.")
        jobs: JobQuerySet = Job.objects.with_related().select_related("organization")
        if options["org"]:
            organization = Organization.objects.filter(slug=options["org"]).first()
            if organization is None:
                raise CommandError(f"--org: no organization '{options['org']}'.")
            jobs = jobs.for_org(organization)
        if options["state"]:
            jobs = jobs.filter(state__in=options["state"])
        if options["kind"]:
            jobs = jobs.filter(kind=options["kind"])
        rows = [
            (
                str(job.pk),
                job.organization.slug,
                job.kind,
                job.state,
                f"{job_percent(job)}%",
                rows_text(job),
                str(job.error_count),
                "-" if job.requested_by is None else job.requested_by.get_username(),
                when(job.created_at),
            )
            for job in jobs.order_by("-created_at", "-id")[: options["limit"]]
        ]
        if not rows:
            self.stdout.write("No jobs.")
            return
        widths = [max(len(row[i]) for row in [LIST_COLUMNS, *rows]) for i in range(len(LIST_COLUMNS))]
        for row in [LIST_COLUMNS, *rows]:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

    def show(self, job: Job, errors_shown: int) -> None:
        requested_by = "-" if job.requested_by is None else job.requested_by.get_username()
        lines = [
            f"Job {job.pk}: {job.get_kind_display()} ({job.kind}) of {job.organization.slug}, {job.state}",
            f"requested by {requested_by}; created {when(job.created_at)}, started {when(job.started_at)}, "
            f"finished {when(job.finished_at)}; duration {duration_text(job_duration(job))}",
            f"progress {job_percent(job)}%: chunks {job.chunks_done}/{job.chunks_total}, rows {rows_text(job)}",
            f"parameters {json.dumps(job.params, sort_keys=True)}",
            f"errors {job.error_count}" + (f" (the first {errors_shown}):" if job.errors and errors_shown else ""),
            *(f"  {json.dumps(error, sort_keys=True)}" for error in job.errors[: max(0, errors_shown)]),
            f"result {json.dumps(job.result, sort_keys=True)}",
        ]
        for line in lines:
            self.stdout.write(line)

    def cancel(self, job: Job) -> None:
        try:
            cancelled = job_cancel(organization=job.organization, job_id=job.pk)
        except JobFinishedError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Cancelled job {cancelled.pk} ({cancelled.kind}): what it staged was discarded.")

    def wait(self, job: Job, interval: float, timeout: float | None) -> None:
        if interval <= 0:
            raise CommandError("--interval: must be more than 0 seconds.")
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: tuple[Any, ...] = ()
        while True:
            # A line when the job moved (its duration alone moving is no news).
            moved = (job.state, job.chunks_done, job.chunks_total, job.rows_done, job.error_count)
            if moved != seen:
                self.stdout.write(progress_line(job))
                seen = moved
            if job.finished:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise CommandError(f"Job {job.pk} is still {job.state} after {timeout:g} s.")
            time.sleep(interval)
            job = Job.objects.filter(pk=job.pk).select_related("organization")[0]
        if job.state != Job.State.SUCCEEDED:
            detail = next((error["detail"] for error in reversed(job.errors) if "detail" in error), "")
            raise CommandError(f"Job {job.pk} {job.state}" + (f": {detail}" if detail else "."))
