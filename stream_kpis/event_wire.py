"""The message as a whole, for `stream_kpis.events`: raw bytes to the fields of the contract.

`parse` checks the size, the UTF-8, the nesting and the JSON syntax, and that the message is an
object, then returns a `Wire` holding the contract's fields untyped: the field checks in
`event_fields` name the field and the value, which a schema library's errors do not.

JSON numbers with a fraction or an exponent become `Decimal` from their literal text, so money
stays exact (`49.90`) and `1e999` is a huge number rather than a parser error. Fields outside
the contract are skipped by the parser without being built. When a key repeats, the last one
counts.
"""

from __future__ import annotations

import logging
import re
from array import array
from decimal import Decimal
from itertools import accumulate
from typing import Any

import msgspec

from stream_kpis.event_fields import UNREADABLE, Invalid

logger = logging.getLogger(__name__)

# No event needs more than one level; deeper JSON (in ignored fields) is refused before parsing,
# so the outcome never depends on how deep the caller's stack happens to be.
MAX_NESTING_DEPTH = 64


class Wire(msgspec.Struct, gc=False):
    """The fields of the contract as parsed, before any check; None when absent or null."""

    type: Any = None
    event_id: Any = None
    occurred_at: Any = None
    customer_id: Any = None
    visitor_id: Any = None
    program: Any = None
    session_id: Any = None
    duration_seconds: Any = None
    started_at: Any = None
    ended_at: Any = None
    converted: Any = None
    goal_reached: Any = None
    subscription_id: Any = None
    mrr: Any = None
    plan: Any = None
    currency: Any = None
    reason: Any = None
    involuntary: Any = None
    order_id: Any = None
    amount: Any = None
    survey: Any = None
    score: Any = None
    scale: Any = None
    comment: Any = None


_WIRE_DECODER = msgspec.json.Decoder(Wire, float_hook=Decimal)
_VALUE_DECODER = msgspec.json.Decoder(float_hook=Decimal)
_WIRE_FIELDS = frozenset(Wire.__struct_fields__)
# msgspec names the place of a type error at the end of its message: "... - at `$.score`",
# "... - at `$.score[0]`"; a message without a place is about the top level.
_FIELD_PATH = re.compile(r" - at `\$\.")
_TOP_LEVEL_KIND = re.compile(r"^Expected `object`, got `([a-z]+)`")
_INTEGER = re.compile(rb"-?[0-9]+")
_ALL_BUT_QUOTES_AND_BRACKETS = bytes(sorted(set(range(256)) - set(b'"[]{}')))
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_JSON_KIND_NAMES = {
    "array": "an array",
    "str": "a string",
    "int": "a number",
    "float": "a number",
    "bool": "a boolean",
    "null": "null",
}


def as_bytes(raw: object) -> bytes:
    """The message value as bytes; `None` (a Kafka tombstone) is not an object."""
    if raw is None:
        raise Invalid("not_an_object", None, "expected a JSON object, got no value (null)")
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        try:
            return raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise Invalid(
                "not_utf8", None, f"unpaired surrogate at character {exc.start}"
            ) from None
    return bytes(raw)  # type: ignore[call-overload]


def parse(raw: bytes, *, max_message_bytes: int) -> Wire:
    """The contract's fields of one message value, or `Invalid` for the message as a whole."""
    size = len(raw)
    if size > max_message_bytes:
        raise Invalid("too_large", None, f"expected at most {max_message_bytes} bytes, got {size}")
    if size == 0:
        raise Invalid("malformed_json", None, "expected a JSON object, got an empty value")
    # The JSON parser does not check the UTF-8 of fields it skips, so check all of it here.
    if not raw.isascii():
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Invalid("not_utf8", None, f"invalid UTF-8 at byte {exc.start}") from None
    if raw.count(b"[") + raw.count(b"{") > MAX_NESTING_DEPTH and _too_deep(raw):
        raise Invalid(
            "malformed_json", None, f"expected at most {MAX_NESTING_DEPTH} levels of nesting"
        )

    try:
        return _decode(raw)
    except RecursionError:
        # A backstop: the nesting check above already bounds how deep the parser recurses.
        raise Invalid("malformed_json", None, "JSON nested too deeply") from None


def _decode(raw: bytes) -> Wire:
    try:
        return _WIRE_DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        return _recover(raw, str(exc))
    except msgspec.DecodeError as exc:
        raise Invalid("malformed_json", None, f"invalid JSON: {exc}") from None


def _too_deep(raw: bytes) -> bool:
    """Whether brackets outside strings nest deeper than MAX_NESTING_DEPTH.

    Only C-level loops, as a hostile megabyte of brackets must cost no more than parsing it:
    drop escaped backslashes and quotes, keep only brackets and quotes, drop what lies between
    quotes (strings), then take the highest running sum of +1 per opening and -1 per closing
    bracket. Malformed nesting (`[}`, an unterminated string) is the parser's to report.
    """
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    quotes_and_brackets = raw.translate(None, _ALL_BUT_QUOTES_AND_BRACKETS)
    brackets = b"".join(quotes_and_brackets.split(b'"')[::2])
    steps = array("b", brackets.translate(_BRACKET_STEPS))  # signed bytes: +1 and -1
    return max(accumulate(steps), default=0) > MAX_NESTING_DEPTH


def _recover(raw: bytes, message: str) -> Wire:
    """Explain a parse that failed on types: a top level that is not an object, or a contract
    field holding an integer too large for Python to read (over 4300 digits)."""
    if _FIELD_PATH.search(message) is None:
        try:
            msgspec.json.decode(raw, type=msgspec.Raw)
        except msgspec.DecodeError as exc:
            raise Invalid("malformed_json", None, f"invalid JSON: {exc}") from None
        kind = _TOP_LEVEL_KIND.match(message)
        got = _JSON_KIND_NAMES.get(kind.group(1), "something else") if kind else "something else"
        raise Invalid("not_an_object", None, f"expected a JSON object, got {got}")

    # Read the fields one by one; a bare huge integer becomes a Decimal, which the field
    # checks then refuse with the field's own reason (out of range, too large, wrong type).
    try:
        fields = msgspec.json.decode(raw, type=dict[str, msgspec.Raw])
    except msgspec.DecodeError as exc:  # the syntax error comes after the huge integer
        raise Invalid("malformed_json", None, f"invalid JSON: {exc}") from None
    values = {
        name: _read_value(bytes(value)) for name, value in fields.items() if name in _WIRE_FIELDS
    }
    return Wire(**values)


def _read_value(text: bytes) -> Any:
    try:
        return _VALUE_DECODER.decode(text)
    except msgspec.ValidationError:
        if _INTEGER.fullmatch(text):
            return Decimal(text.decode("ascii"))
        return UNREADABLE
