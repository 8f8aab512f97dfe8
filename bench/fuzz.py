"""Schema-driven fuzzing of a running server, for an operator's report: ``run(url, token, max_examples)``.

Runs the schemathesis CLI (``schemathesis run``, every check, the project's ``schemathesis.toml``) against the
server at ``url`` with an API token, and reads its JSON run report into a small summary:

- ``operations``: API operations tested;
- ``cases``: test cases generated (and sent);
- ``server_errors``: failures of the ``not_a_server_error`` check (a 5xx answer);
- ``schema_violations``: every other failure (an answer, status, content type or header the schema does not
  document, a schema-valid request refused or a schema-violating one accepted);
- ``failures``: one line per failure kind and operation, e.g. ``"ST103 Undocumented status code: GET /api/v1/x"``,
  and the run's errors;
- ``command``: the command line that ran, the token replaced by ``***``.

The run writes to the database of the server it fuzzes (suppliers, activities): point it at a disposable
organization's token, never a production one.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "schemathesis.toml"
SERVER_ERROR = "ST101"  # schemathesis's code for a failed not_a_server_error check
REDACTED = "***"


def command(url: str, token: str, max_examples: int, report: Path) -> list[str]:
    """The CLI invocation: every check on every operation of ``url``'s schema, its JSON run report to ``report``."""
    url = url.rstrip("/")
    return [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/api/schema/",
        "--url",
        url,
        "--header",
        f"Authorization: Token {token}",
        "--checks",
        "all",
        "--max-examples",
        str(max_examples),
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--no-color",
    ]


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """``run``'s summary (module docstring) of a schemathesis JSON run report, without ``command``."""
    server_errors = schema_violations = 0
    failures = []
    for group in report.get("failures", []):
        count = int(group.get("count", 0))
        if group.get("code") == SERVER_ERROR:
            server_errors += count
        else:
            schema_violations += count
        operations = ", ".join(group.get("operations", [])) or "?"
        failures.append(f"{group.get('code')} {group.get('title')}: {operations}")
    failures += [f"error: {error.get('title')} (x{error.get('count', 1)})" for error in report.get("errors", [])]
    return {
        "operations": int(report.get("operations", {}).get("tested", 0)),
        "cases": int(report.get("test_cases", {}).get("generated", 0)),
        "server_errors": server_errors,
        "schema_violations": schema_violations,
        "failures": failures,
    }


def redacted(argv: list[str], token: str) -> str:
    """``argv`` as one shell line, ``token`` replaced by ``***``."""
    return shlex.join(argv).replace(token, REDACTED)


def run(url: str, token: str, max_examples: int) -> dict[str, Any]:
    """Fuzz the server at ``url`` (e.g. ``http://127.0.0.1:8000``) as ``token``'s user; ``max_examples`` per
    operation and phase. Returns the summary of the module docstring. Raises ``RuntimeError`` when schemathesis
    wrote no report (it could not start: the server or its schema unreachable, a bad option)."""
    with tempfile.TemporaryDirectory(prefix="vcci-fuzz-") as directory:
        report_path = Path(directory) / "report.json"
        argv = command(url, token, max_examples, report_path)
        # Exit code 1 means failures were found: the report says which. cwd: schemathesis keeps its cache there.
        completed = subprocess.run(argv, cwd=directory, capture_output=True, text=True, check=False)
        if not report_path.exists():
            output = (completed.stdout + completed.stderr).replace(token, REDACTED)
            raise RuntimeError(f"schemathesis wrote no report (exit {completed.returncode}):\n{output[-2000:]}")
        report = json.loads(report_path.read_text())
    return {**summarize(report), "command": redacted(argv, token)}


def main() -> None:
    """``python -m bench.fuzz URL TOKEN [MAX_EXAMPLES]``: the summary as JSON."""
    url, token, *rest = sys.argv[1:]
    print(json.dumps(run(url, token, int(rest[0]) if rest else 15), indent=2))


if __name__ == "__main__":
    main()
