"""perf.registry: one item per name, in registration order."""

from __future__ import annotations

import pytest

from perf.registry import Registry


def test_items_by_name_in_registration_order() -> None:
    registry: Registry[int] = Registry("number")
    assert registry.add("two", 2) == 2
    registry.add("one", 1)
    registry.add("two", 2)  # the same again: harmless
    assert list(registry.items().items()) == [("two", 2), ("one", 1)]
    with pytest.raises(ValueError, match="A number named 'two' is already registered"):
        registry.add("two", 3)
    registry.remove("two")
    registry.remove("never")
    assert registry.items() == {"one": 1}
    registry.items()["three"] = 3  # a copy: the registry is unchanged
    assert registry.items() == {"one": 1}
