"""The API's JSON parser: DRF's ``JSONParser`` with exact numbers and a nesting limit.

- **Numbers are Decimals.** A JSON number with a fraction or an exponent is read as ``decimal.Decimal`` from its
  text, never as a float: ``1e-400`` would underflow to 0 and ``1e400`` overflow to infinity before any field saw
  it, and a float keeps only about 16 significant digits of an amount. The fields then judge the exact value (an
  amount's places and digits: a 400 naming the field). Integers stay ``int``.
- **No NaN or Infinity.** The non-standard constants are refused, as DRF's ``STRICT_JSON`` does.
- **At most ``MAX_DEPTH`` levels of nesting.** No request body of the API is deeper than 4 (``{"items": [{"gases":
  {...}}]}``). A 2 KB body of ``[[[[...]]]]`` nested ~950 deep otherwise ends in a ``RecursionError`` (an HTML
  500) in the decoder or in any later recursive walk of the data (DRF's ``JSONField``, the renderer of an error),
  depending on how deep the stack already is. The decoder's own ``RecursionError`` is turned into the same 400.
"""

from __future__ import annotations

import codecs
import json
from decimal import Decimal
from typing import IO, Any, NoReturn

from rest_framework import parsers
from rest_framework.exceptions import ParseError

MAX_DEPTH = 32


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON compliant; send a finite number.")


_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_refuse_constant)
_TOO_DEEP = f"JSON parse error - the body is nested more than {MAX_DEPTH} levels deep."


def _too_deep(value: Any) -> bool:
    """Whether ``value`` (decoded JSON) nests lists and objects more than ``MAX_DEPTH`` levels deep.

    Iterative, so that the check itself cannot exhaust the stack; scalars are not visited.
    """
    if not isinstance(value, dict | list):
        return False
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_DEPTH:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                pending.append((child, depth + 1))
    return False


class JSONParser(parsers.JSONParser):
    """``application/json`` bodies read with Decimal numbers, no NaN/Infinity and a nesting limit (module docstring)."""

    def parse(self, stream: IO[bytes], media_type: str | None = None, parser_context: Any = None) -> Any:
        # DRF's charset check (text encodings only), newer than the type stubs.
        encoding = parsers.get_encoding(parser_context or {})  # type: ignore[attr-defined]
        try:
            text = codecs.getreader(encoding)(stream).read()
            data = _DECODER.decode(text)
        except RecursionError:
            raise ParseError(_TOO_DEEP) from None
        except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ParseError(f"JSON parse error - {exc}") from None
        if _too_deep(data):
            raise ParseError(_TOO_DEEP)
        return data
