"""perf.checks: a missing collectstatic manifest is reported before serving; so are an unregistered CACHE_MAX_AGE key
and a Retry-After that meets the keep-alive."""

from __future__ import annotations

from pathlib import Path

from django.test import override_settings

from perf.checks import manifest_present, max_age_resources, retry_after_keepalive

MANIFEST_STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}


def test_missing_manifest_is_a_warning(tmp_path: Path) -> None:
    with override_settings(DEBUG=False, STATIC_ROOT=str(tmp_path), STORAGES=MANIFEST_STORAGES):
        messages = manifest_present()
    assert [m.id for m in messages] == ["perf.W001"]


def test_present_manifest_passes(tmp_path: Path) -> None:
    (tmp_path / "staticfiles.json").write_text('{"paths": {}, "version": "1.1"}')
    with override_settings(DEBUG=False, STATIC_ROOT=str(tmp_path), STORAGES=MANIFEST_STORAGES):
        assert manifest_present() == []


def test_plain_storage_needs_no_manifest(tmp_path: Path) -> None:
    # The test settings use plain StaticFilesStorage, which serves files without a manifest.
    with override_settings(DEBUG=False, STATIC_ROOT=str(tmp_path)):
        assert manifest_present() == []


def test_cache_max_age_keys_are_registered_resources() -> None:
    assert max_age_resources() == []  # the project's settings name the domain's resources
    with override_settings(CACHE_MAX_AGE={"factors": 60, "factros": 60}):
        messages = max_age_resources()
    assert [(m.id, "'factros'" in m.msg) for m in messages] == [("perf.W002", True)]


def test_no_default_retry_after_meets_the_keep_alive() -> None:
    assert retry_after_keepalive() == []


def test_a_retry_after_that_reaches_the_keep_alive_is_a_warning() -> None:
    # Without jitter each refusal is told the delay itself: 5 s doubled is 10 s, then 20 s: the keep-alive.
    fixed = {"ADMISSION_RETRY_AFTER_JITTER": False}
    with override_settings(ADMISSION_RETRY_AFTER=5, ADMISSION_RETRY_AFTER_MAX=30, GUNICORN_KEEPALIVE=20, **fixed):
        messages = retry_after_keepalive()
    assert [m.id for m in messages] == ["perf.W003"]
    assert "after 20 s" in messages[0].msg and "GUNICORN_KEEPALIVE (20 s)" in messages[0].msg
    # Within the margin, not only equal: 16 s against a keep-alive of 17 s.
    with override_settings(ADMISSION_RETRY_AFTER=1, ADMISSION_RETRY_AFTER_MAX=30, GUNICORN_KEEPALIVE=17, **fixed):
        assert "after 16 s" in retry_after_keepalive()[0].msg
    with override_settings(ADMISSION_RETRY_AFTER=1, ADMISSION_RETRY_AFTER_MAX=16, GUNICORN_KEEPALIVE=20, **fixed):
        assert retry_after_keepalive() == []


def test_jittered_retry_afters_step_around_the_keep_alive_unless_they_cannot() -> None:
    # With jitter, 20 s is offered as 10 to 18 s: the draw leaves out 19 to 21.
    with override_settings(ADMISSION_RETRY_AFTER=5, ADMISSION_RETRY_AFTER_MAX=30, GUNICORN_KEEPALIVE=20):
        assert retry_after_keepalive() == []
    # A delay whose whole upper half is near the keep-alive (1 and 2 s against 2 s) is told as it is: a warning.
    with override_settings(ADMISSION_RETRY_AFTER=1, ADMISSION_RETRY_AFTER_MAX=2, GUNICORN_KEEPALIVE=2):
        messages = retry_after_keepalive()
    assert [m.id for m in messages] == ["perf.W003"]
    assert "after 1, 2 s" in messages[0].msg
    # A database outage's 503 says ADMISSION_RETRY_AFTER as it is: 20 s is near a 20-s keep-alive, drawn or not.
    with override_settings(ADMISSION_RETRY_AFTER=20, ADMISSION_RETRY_AFTER_MAX=30, GUNICORN_KEEPALIVE=20):
        assert "after 20 s" in retry_after_keepalive()[0].msg
