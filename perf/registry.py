"""Named things that apps register with the runtime layer at start-up (hot queries, warm-ups, cache resources)."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Items by name, in registration order. One name, one item: registering the same item again is harmless
    (a module imported twice, ``ready`` run twice), a different one under a taken name is a ``ValueError``."""

    def __init__(self, what: str) -> None:
        self.what = what  # for messages: "hot query", "warm-up", ...
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        existing = self._items.get(name)
        if existing is not None and existing != item:
            raise ValueError(f"A {self.what} named '{name}' is already registered.")
        self._items[name] = item
        return item

    def remove(self, name: str) -> None:
        """Drop ``name`` (tests register throwaway items); unknown names are ignored."""
        self._items.pop(name, None)

    def items(self) -> dict[str, T]:
        """A copy of every registered item by name, in registration order."""
        return dict(self._items)
