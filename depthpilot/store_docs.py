"""Message <-> MongoDB document conversion shared by the market-data and trading parts of the
store (pure: no I/O).

Document layout of message collections (one document per message):

* ``_id``  = the message ``id`` (the primary key, so re-inserting a message is a duplicate-key
  no-op). Reading back renames ``_id`` to ``id``.
* ``tns``  = normalised event time, int ns (``ts_exchange`` or ``ts_recv`` for books/trades,
  ``ts`` where the message has one, else ``trace["created"]``).
* ``time`` = the same instant as a BSON datetime (ms); ``stored_at`` = when it was written
  (the snapshot TTL counts from it).
* numpy arrays as ``{"shape": [...], "data": <little-endian float64 bytes>}``.

**Money is stored as BSON Decimal128** (not strings): exact, and still numeric on the server,
so range filters (``filled_qty < x``) and ``$sum`` work on MongoDB and on mongomock-ng alike.
Every ``Decimal`` going in becomes ``Decimal128``; every ``Decimal128`` coming out becomes a
``Decimal`` again, so the round trip is exact (``Decimal('0.1')`` stays ``Decimal('0.1')``,
trailing zeros included).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal

import msgspec
import numpy as np
from bson.decimal128 import Decimal128

from depthpilot import messages as m

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class StoreError(RuntimeError):
    """Any store failure: unreachable server, bad input, undecodable document, write error."""


# --------------------------------------------------------------------------- money


def to_bson(value: Any) -> Any:
    """Recursively turn ``Decimal`` into ``Decimal128`` (dicts and lists walked)."""
    if isinstance(value, Decimal):
        return Decimal128(value)
    if isinstance(value, dict):
        return {k: to_bson(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_bson(v) for v in value]
    return value


def from_bson(value: Any) -> Any:
    """Recursively turn ``Decimal128`` back into ``Decimal``."""
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, dict):
        return {k: from_bson(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_bson(v) for v in value]
    return value


def dec(value: Any) -> Decimal:
    """A stored amount (Decimal128, Decimal, number, string or None) as a Decimal (None -> 0)."""
    if value is None:
        return Decimal(0)
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


# --------------------------------------------------------------------------- arrays / time

_ARRAY_FIELDS: dict[type, tuple[str, ...]] = {}


def array_fields(cls: type[m.Message]) -> tuple[str, ...]:
    cached = _ARRAY_FIELDS.get(cls)
    if cached is None:
        cached = tuple(f.name for f in msgspec.structs.fields(cls) if f.type is np.ndarray)
        _ARRAY_FIELDS[cls] = cached
    return cached


def pack_array(arr: np.ndarray) -> dict[str, Any]:
    """ndarray -> ``{"shape": [...], "data": float64 little-endian bytes}`` (BSON binary)."""
    a = np.ascontiguousarray(arr, dtype="<f8")
    return {"shape": list(a.shape), "data": a.tobytes()}


def unpack_array(obj: Any) -> np.ndarray:
    """Inverse of :func:`pack_array` (returns a writable float64 array)."""
    try:
        shape = tuple(int(s) for s in obj["shape"])
        arr = np.frombuffer(obj["data"], dtype="<f8")
        return arr.reshape(shape).astype(np.float64, copy=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"stored array is malformed: {exc}") from exc


def _is_packed(v: Any) -> bool:
    return isinstance(v, dict) and len(v) == 2 and "shape" in v and "data" in v


def event_ns(msg: m.Message) -> int:
    """The instant a message describes, ns since epoch (see module docstring)."""
    if isinstance(msg, (m.BookSnapshot, m.Trade)):
        t = msg.ts_exchange or msg.ts_recv
    else:
        t = getattr(msg, "ts", 0) or 0
    if not t:
        t = msg.trace.get("created") or m.now_ns()
    return int(t)


def ns_to_datetime(ns: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ns // 1_000_000)  # BSON datetimes hold ms


def to_ns(t: int | datetime, what: str) -> int:
    if isinstance(t, datetime):
        if t.tzinfo is None:  # naive = UTC (as pymongo returns without tz_aware)
            t = t.replace(tzinfo=timezone.utc)
        return (t - _EPOCH) // timedelta(microseconds=1) * 1000
    if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
        return int(t)
    raise StoreError(f"{what} must be an int (ns since epoch) or a datetime, got {type(t).__name__}")


# --------------------------------------------------------------------------- messages


def message_body(msg: m.Message) -> dict[str, Any]:
    """A message as a BSON-ready dict: plain values, Decimal money as Decimal128."""
    body = msgspec.to_builtins(
        msg, builtin_types=(Decimal,), enc_hook=lambda o: o.tolist() if isinstance(o, np.ndarray) else o.item()
    )
    return to_bson(body)


def message_to_doc(msg: m.Message) -> dict[str, Any]:
    """Message -> MongoDB document (message id as ``_id``, arrays packed, ``tns``/``time``)."""
    if not isinstance(msg, m.Message):
        raise StoreError(f"expected a depthpilot message, got {type(msg).__name__}")
    arrays = array_fields(type(msg))
    if arrays:  # hot path (books, features): no Decimal fields, arrays packed directly
        doc = m.to_builtins(msg)
        for name in arrays:
            doc[name] = pack_array(getattr(msg, name))
    else:
        doc = message_body(msg)
    doc["_id"] = doc.pop("id")
    tns = event_ns(msg)
    doc["tns"] = tns
    doc["time"] = ns_to_datetime(tns)
    # TTL counts from when we stored it, not from the event: a replayed 2024 recording must
    # not vanish the moment it is written.
    doc["stored_at"] = datetime.now(timezone.utc)
    return doc


def _convert_dec_hook(typ: type, obj: Any) -> Any:
    if typ is np.ndarray and isinstance(obj, np.ndarray):
        return obj
    raise NotImplementedError(f"cannot decode {typ!r} from {type(obj).__name__}")


def doc_to_message(doc: Mapping[str, Any]) -> m.Message:
    """Stored message document (raw, as returned by pymongo) -> the typed message."""
    d = dict(doc)
    if "_id" in d:
        d["id"] = d.pop("_id")
    tag = d.get("type")
    cls = m.MESSAGE_BY_TAG.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise StoreError(f"document {d.get('id')!r} has no known message type (type={tag!r})")
    for name in array_fields(cls):
        if name in d:
            d[name] = unpack_array(d[name])
    for k in ("time", "stored_at"):  # datetimes, not message fields
        d.pop(k, None)
    d = {k: (v.to_decimal() if isinstance(v, Decimal128) else v) for k, v in d.items()}
    try:
        msg = msgspec.convert(d, cls, dec_hook=_convert_dec_hook)
    except (msgspec.ValidationError, TypeError, ValueError) as exc:
        raise StoreError(f"stored {tag} {d.get('id')!r} does not match its schema: {exc}") from exc
    if msg.v != cls.VERSION:
        raise StoreError(f"stored {tag} {msg.id!r} has schema v{msg.v}, this build speaks v{cls.VERSION}")
    return msg


def snapshot_from_doc(doc: Mapping[str, Any]) -> m.BookSnapshot:
    msg = doc_to_message(doc)
    if not isinstance(msg, m.BookSnapshot):
        raise StoreError(f"document {msg.id!r} is a {msg.type_name}, not a book_snapshot")
    return msg


def public(doc: Mapping[str, Any], arrays: Literal["list", "numpy"] = "list") -> dict[str, Any]:
    """Raw document -> what queries return: ``_id`` -> ``id`` (message docs) or dropped
    (ObjectId of state docs), packed arrays -> lists or numpy arrays, Decimal128 -> Decimal."""
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if k == "_id":
            if isinstance(v, str):
                out["id"] = v
            continue
        if _is_packed(v):
            a = unpack_array(v)
            out[k] = a.tolist() if arrays == "list" else a
        else:
            out[k] = from_bson(v)
    return out
