"""bench.fuzz: the schemathesis command, its JSON run report read into the operator's summary, the token redacted."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench import fuzz

TOKEN = "0123456789abcdef0123456789abcdef01234567"
# The parts of a schemathesis 4.32 JSON run report (``--report json``) that the summary reads.
REPORT: dict[str, Any] = {
    "schemathesis_version": "4.32.5",
    "exit_code": 1,
    "operations": {"total": 20, "selected": 20, "tested": 19, "errored": 0, "skipped": 1, "skip_reasons": []},
    "test_cases": {"generated": 2346, "with_failures": 7, "unique_failures": 7, "without_checks": 0, "errored": 0},
    "failures": [
        {
            "type": "check",
            "code": "ST101",
            "title": "Server error",
            "severity": "critical",
            "count": 2,
            "operations": ["POST /api/v1/calculate/", "GET /api/v1/emissions/"],
        },
        {
            "type": "check",
            "code": "ST103",
            "title": "Undocumented status code",
            "severity": "medium",
            "count": 3,
            "operations": ["GET /api/v1/factors/"],
        },
        {
            "type": "check",
            "code": "ST201",
            "title": "Schema-violating request accepted",
            "severity": "medium",
            "count": 1,
            "operations": ["POST /api/v1/suppliers/"],
        },
    ],
    "errors": [{"title": "Network Error", "count": 2}],
}


def test_summarize_counts_server_errors_apart_from_schema_violations():
    assert fuzz.summarize(REPORT) == {
        "operations": 19,
        "cases": 2346,
        "server_errors": 2,
        "schema_violations": 4,
        "failures": [
            "ST101 Server error: POST /api/v1/calculate/, GET /api/v1/emissions/",
            "ST103 Undocumented status code: GET /api/v1/factors/",
            "ST201 Schema-violating request accepted: POST /api/v1/suppliers/",
            "error: Network Error (x2)",
        ],
    }


def test_summarize_a_clean_run():
    clean = {**REPORT, "failures": [], "errors": []}
    assert fuzz.summarize(clean) == {
        "operations": 19,
        "cases": 2346,
        "server_errors": 0,
        "schema_violations": 0,
        "failures": [],
    }


def test_run_sends_every_check_and_the_token_and_reports_the_command_redacted(monkeypatch: pytest.MonkeyPatch):
    calls: list[list[str]] = []

    def schemathesis(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        report = Path(argv[argv.index("--report-json-path") + 1])
        report.write_text(json.dumps(REPORT))
        return subprocess.CompletedProcess(argv, 1, stdout="", stderr="")

    monkeypatch.setattr(fuzz.subprocess, "run", schemathesis)

    result = fuzz.run("http://127.0.0.1:8000/", TOKEN, 7)

    (argv,) = calls
    assert argv[argv.index("--config-file") + 1] == str(fuzz.CONFIG)
    assert argv[argv.index("run") + 1] == "http://127.0.0.1:8000/api/schema/"
    assert argv[argv.index("--url") + 1] == "http://127.0.0.1:8000"
    assert argv[argv.index("--header") + 1] == f"Authorization: Token {TOKEN}"
    assert argv[argv.index("--checks") + 1] == "all"
    assert argv[argv.index("--max-examples") + 1] == "7"
    assert TOKEN not in result["command"]
    assert "'Authorization: Token ***'" in result["command"]
    assert (result["operations"], result["cases"], result["server_errors"], result["schema_violations"]) == (
        19,
        2346,
        2,
        4,
    )


def test_run_without_a_report_raises_with_the_output_redacted(monkeypatch: pytest.MonkeyPatch):
    def schemathesis(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 2, stdout="", stderr=f"Failed to load schema with token {TOKEN}")

    monkeypatch.setattr(fuzz.subprocess, "run", schemathesis)

    with pytest.raises(RuntimeError, match=r"exit 2") as raised:
        fuzz.run("http://127.0.0.1:8000", TOKEN, 5)
    assert TOKEN not in str(raised.value)
    assert "token ***" in str(raised.value)
