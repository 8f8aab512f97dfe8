"""perf.messages: Django's fallback message storage, its backends made only for requests that use messages."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib import messages
from django.contrib.messages.storage import default_storage
from django.contrib.messages.storage.cookie import CookieStorage
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.messages.storage.session import SessionStorage
from django.contrib.sessions.backends.signed_cookies import SessionStore
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from perf.messages import LazyFallbackStorage


def request_with(cookies: dict[str, str] | None = None) -> HttpRequest:
    request = RequestFactory().get("/admin/")
    request.COOKIES.update(cookies or {})
    request.session = SessionStore()
    return request


def test_it_is_the_configured_storage() -> None:
    assert settings.MESSAGE_STORAGE == "perf.messages.LazyFallbackStorage"
    assert isinstance(default_storage(request_with()), LazyFallbackStorage)


def test_a_request_that_uses_no_message_makes_no_backend() -> None:
    storage = LazyFallbackStorage(request_with())
    response = HttpResponse()

    assert storage.update(response) is None

    assert "storages" not in vars(storage)
    assert "messages" not in response.cookies


@pytest.mark.parametrize("storage_class", [FallbackStorage, LazyFallbackStorage])
def test_a_message_added_is_read_by_the_next_request_as_with_djangos_storage(storage_class: Any) -> None:
    first = request_with()
    storage = storage_class(first)
    storage.add(messages.SUCCESS, "The supplier was added.")
    response = HttpResponse()
    storage.update(response)
    cookie = response.cookies["messages"].value

    later = storage_class(request_with({"messages": cookie}))

    assert [(m.level, m.message) for m in later] == [(messages.SUCCESS, "The supplier was added.")]
    assert [type(backend) for backend in later.storages] == [CookieStorage, SessionStorage]


def test_the_cookie_is_djangos_own() -> None:
    def cookie(storage_class: Any) -> str:
        storage = storage_class(request_with())
        storage.add(messages.INFO, "Imported 3 factors.")
        response = HttpResponse()
        storage.update(response)
        return response.cookies["messages"].value

    # The signature is the same key, salt and payload's: what Django's storage writes and reads.
    assert cookie(LazyFallbackStorage) == cookie(FallbackStorage)


def test_messages_too_large_for_the_cookie_fall_back_to_the_session() -> None:
    request = request_with()
    storage = LazyFallbackStorage(request)
    for index in range(40):
        storage.add(messages.INFO, f"message {index} " + "x" * 200)
    response = HttpResponse()
    storage.update(response)

    later = LazyFallbackStorage(request_with({"messages": response.cookies["messages"].value}))
    later.request.session = request.session  # the same session, as the next request

    assert [m.message for m in later] == [f"message {index} " + "x" * 200 for index in range(40)]
