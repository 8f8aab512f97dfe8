"""Compact, exact serialization for cached values (msgpack).

Decimals, dates and datetimes round-trip exactly (as msgpack extension types carrying their
ISO / decimal text), so emissions and money never pass through float. Model instances are
cached as rows (``model_row``) and rebuilt without a query (``model_from_row``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TypeVar

import msgpack
from django.db import DEFAULT_DB_ALIAS
from django.db.models import Model

M = TypeVar("M", bound=Model)

_DECIMAL, _DATETIME, _DATE = 1, 2, 3


def _default(obj: Any) -> msgpack.ExtType:
    if isinstance(obj, Decimal):
        return msgpack.ExtType(_DECIMAL, str(obj).encode())
    # datetime before date: a datetime is a date too.
    if isinstance(obj, dt.datetime):
        return msgpack.ExtType(_DATETIME, obj.isoformat().encode())
    if isinstance(obj, dt.date):
        return msgpack.ExtType(_DATE, obj.isoformat().encode())
    raise TypeError(f"Cannot cache a value of type {type(obj).__name__}.")


def _ext_hook(code: int, data: bytes) -> Any:
    text = data.decode()
    if code == _DECIMAL:
        return Decimal(text)
    if code == _DATETIME:
        return dt.datetime.fromisoformat(text)
    if code == _DATE:
        return dt.date.fromisoformat(text)
    return msgpack.ExtType(code, data)


def pack(value: Any) -> bytes:
    """``value`` (msgpack types plus Decimal, date, datetime) as bytes; tuples come back as lists."""
    return msgpack.packb(value, default=_default, use_bin_type=True)


def unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, ext_hook=_ext_hook, raw=False, strict_map_key=False)


def model_row(instance: Model, fields: Sequence[str] | None = None) -> list[Any]:
    """``instance``'s concrete field values (by attname), in ``_meta.concrete_fields`` order.

    ``fields`` restricts the row to those attnames (e.g. to keep a password hash out of the
    cache); the rebuilt instance then defers the rest.
    """
    return [
        getattr(instance, f.attname) for f in instance._meta.concrete_fields if fields is None or f.attname in fields
    ]


def model_from_row(model: type[M], row: Sequence[Any], fields: Sequence[str] | None = None) -> M:
    """The instance ``model_row`` described, as if loaded from the database (no query).

    Precondition: ``row`` came from ``model_row`` with the same ``fields`` and the same model
    definition (cache keys carry ``CACHE_VERSION`` so a deploy that changes a model starts afresh).
    """
    names = [f.attname for f in model._meta.concrete_fields if fields is None or f.attname in fields]
    return model.from_db(DEFAULT_DB_ALIAS, names, list(row))
