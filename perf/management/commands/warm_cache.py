"""``manage.py warm_cache``: fill the two-level cache for active organizations (``perf.warm``).

Per organization, the steps every installed app registers (``perf.warm.WarmUp``; the domain's are
listed in ``emissions.warm``): ``-v 2`` names each. Responses are produced by the real views
in-process, so they are stored under the key a client request computes; that key includes the Host
header, the scheme and the negotiated media type, so warm with the ``--host`` and ``--scheme``
your clients use. The report says, per kind, how many lookups were already cached and how many
were filled, and how big the cache now is.
"""

from __future__ import annotations

from typing import IO, Any, cast

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from perf import tenants
from perf.tenants import Tenant, UnknownTenants
from perf.warm import ACCEPT, SCHEMES, WarmError, default_host, warm


class Command(BaseCommand):
    help = (
        "Fill the cache with what the installed apps register for warming (-v 2 lists each item) for every "
        "active organization, or for each --org. Responses are cached per Host, scheme and "
        f"Accept: only clients sending the same Host (--host), scheme (--scheme) and Accept: {ACCEPT} (or no "
        "Accept) are served what is warmed; others fill their own entries on first use."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--org",
            action="append",
            dest="orgs",
            metavar="SLUG",
            help="Warm this organization only (repeat for several); default: every active organization",
        )
        parser.add_argument(
            "--host",
            default=None,
            help="Host header the clients send (default: the first ALLOWED_HOSTS entry that is not a pattern, "
            "else localhost)",
        )
        parser.add_argument("--scheme", choices=SCHEMES, default="http", help="Scheme the clients use (default: http)")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar on stderr")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.CACHE_ENABLED:
            self.stdout.write("CACHE_ENABLED is off: there is no cache to warm.")
            return
        organizations = self._organizations(options["orgs"])
        if not organizations:
            self.stdout.write("No organization is active (none has data to serve); nothing to warm.")
            return
        show_progress = not options["no_progress"] and options["verbosity"] > 0
        # The raw stream: OutputWrapper.write would end each of tqdm's carriage-return redraws with a newline.
        stream = cast(IO[str], self.stderr._out) if show_progress else None
        try:
            report = warm(
                organizations,
                host=options["host"] or default_host(),
                scheme=options["scheme"],
                progress=stream,
            )
        except WarmError as exc:
            raise CommandError(str(exc)) from exc
        for line in report.lines():
            self.stdout.write(line)
        if options["verbosity"] >= 2:
            for step in report.steps:
                c = step.counts
                outcome = f"failed: {step.error}" if step.error else f"{c.hits} hit, {c.filled} filled"
                self.stdout.write(f"  {step.organization}: {step.label}: {outcome}")
        if report.errors:
            raise CommandError(f"{len(report.errors)} item(s) could not be warmed (see above and the log).")

    @staticmethod
    def _organizations(slugs: list[str] | None) -> list[Tenant]:
        """The organizations named (CommandError naming any unknown slug), else the active ones."""
        organizations = tenants.registered()
        if not slugs:
            return list(organizations.active())
        try:
            return organizations.named(slugs)
        except UnknownTenants as exc:
            raise CommandError(str(exc)) from exc
