"""perf.accesslog: the same access-log lines as gunicorn's Logger, from only the atoms the format names."""

from __future__ import annotations

import datetime as dt
import re
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger, SafeAtoms

from perf.accesslog import ATOMS, AccessLogger

REQUEST_HEADERS = [("HOST", "api.example.com"), ("AUTHORIZATION", "Token abc"), ("X-TRACE", "a"), ("X-TRACE", "b")]
RESPONSE_HEADERS = [("Content-Type", "application/json"), ("ETag", '"k-gzip"'), ("Vary", "Accept")]
ENVIRON = {
    "REMOTE_ADDR": "10.0.0.7",
    "REQUEST_METHOD": "GET",
    "RAW_URI": "/api/v1/emissions/?limit=5",
    "PATH_INFO": "/api/v1/emissions/",
    "QUERY_STRING": "limit=5",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_USER_AGENT": 'locust "fast"',
    "HTTP_AUTHORIZATION": "Token abc",
}


def logger(access_log_format: str, cls: type[Logger] = AccessLogger) -> Logger:
    cfg = Config()
    cfg.set("access_log_format", access_log_format)
    return cls(cfg)


def lookups(log: Logger, access_log_format: str, environ: dict[str, Any], **resp: Any) -> dict[str, Any]:
    """What the access log's %-formatting reads for each key of ``access_log_format``."""
    response = SimpleNamespace(**{"status": "200 OK", "sent": 11051, "headers": RESPONSE_HEADERS, **resp})
    request = SimpleNamespace(headers=REQUEST_HEADERS)
    request_time = dt.timedelta(seconds=1, microseconds=234567)
    atoms = SafeAtoms(log.atoms(response, request, environ, request_time))
    return {key: atoms[key] for key in re.findall(r"%\(([^)]*)\)", access_log_format)}


EVERY_ATOM = " ".join(f"%({key})s" for key in ATOMS if key != "t")  # t: the time of day, compared below
BRACED = "%({host}i)s %({X-Trace}i)s %({etag}o)s %({ETAG}O)s %({missing}i)s %({path_info}e)s %({HTTP_USER_AGENT}e)s"


@pytest.mark.parametrize("access_log_format", [EVERY_ATOM, BRACED, '%(h)s "%(r)s" %(s)s %(B)s %(M)sms %(D)sus "%(a)s"'])
@pytest.mark.parametrize("environ", [ENVIRON, {k: v for k, v in ENVIRON.items() if k not in ("HTTP_USER_AGENT",)}])
def test_every_atom_is_gunicorns(access_log_format: str, environ: dict[str, Any]) -> None:
    ours = lookups(logger(access_log_format), access_log_format, environ)
    theirs = lookups(logger(access_log_format, Logger), access_log_format, environ)
    assert ours == theirs
    assert len(ours) == access_log_format.count("%(")


def test_a_response_without_a_size_and_a_numeric_status_read_as_gunicorn_reads_them() -> None:
    for resp in ({"sent": None}, {"status": 304}):
        ours = lookups(logger(EVERY_ATOM), EVERY_ATOM, ENVIRON, **resp)
        assert ours == lookups(logger(EVERY_ATOM, Logger), EVERY_ATOM, ENVIRON, **resp)


def test_only_the_named_atoms_are_built() -> None:
    log = logger('%(h)s "%(r)s" %(s)s')
    response = SimpleNamespace(status="200 OK", sent=2, headers=RESPONSE_HEADERS)
    atoms = log.atoms(response, SimpleNamespace(headers=REQUEST_HEADERS), ENVIRON, dt.timedelta())
    assert atoms == {"h": "10.0.0.7", "r": "GET /api/v1/emissions/?limit=5 HTTP/1.1", "s": "200"}
    assert len(Logger(log.cfg).atoms(response, SimpleNamespace(headers=REQUEST_HEADERS), ENVIRON, dt.timedelta())) > 30


def test_the_line_is_gunicorns(capsys: pytest.CaptureFixture[str]) -> None:
    """The whole access() call, as gunicorn runs it, prints the same line with either logger."""
    access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms %(D)sus "%(a)s" %({etag}o)s'
    lines = []
    for cls in (AccessLogger, Logger):
        log = logger(access_log_format, cls)
        log.cfg.set("accesslog", "-")
        log.setup(log.cfg)  # its handler writes to this test's captured stdout
        response = SimpleNamespace(status="200 OK", sent=11051, headers=RESPONSE_HEADERS)
        log.access(response, SimpleNamespace(headers=REQUEST_HEADERS), ENVIRON, dt.timedelta(microseconds=1500))
        lines.append(capsys.readouterr().out)
    expected = (
        '10.0.0.7 "GET /api/v1/emissions/?limit=5 HTTP/1.1" 200 11051 1ms 1500us "locust \\"fast\\"" \\"k-gzip\\"\n'
    )
    assert lines[0] == lines[1] == expected
