"""Django's message storage, its backends made only for a request that uses messages.

``MessageMiddleware`` gives every request a storage; Django's ``FallbackStorage`` makes its two backends at once,
the cookie one with a ``Signer`` built from the secret keys. Only the admin's pages add or show messages; the API's
requests, nearly all of the traffic, never do, and making the backends for them was about 1 % of the workers'
samples at 500 users (py-spy, ``bench.loadtest --profile``). ``LazyFallbackStorage`` makes them on first use:
reading, adding or storing messages go through them exactly as in ``FallbackStorage``; a request that does none of
these never makes them (``update`` stores nothing when nothing was read or added).

Precondition, as for Django's storage: ``SessionMiddleware`` runs before ``MessageMiddleware``. Django's session
backend checks it when the storage is made; here, when messages are first used (the admin's first one).
"""

from __future__ import annotations

from typing import Any

from django.contrib.messages.storage.base import BaseStorage
from django.contrib.messages.storage.fallback import FallbackStorage
from django.utils.functional import cached_property


class LazyFallbackStorage(FallbackStorage):
    """``FallbackStorage`` whose backends (``storages``) are made when first needed (module docstring)."""

    def __init__(self, request: Any, *args: Any, **kwargs: Any) -> None:
        BaseStorage.__init__(self, request, *args, **kwargs)
        self._backend_args = (args, kwargs)
        self._used_storages: set[BaseStorage] = set()

    @cached_property
    def storages(self) -> list[BaseStorage]:
        args, kwargs = self._backend_args
        return [storage_class(self.request, *args, **kwargs) for storage_class in self.storage_classes]
