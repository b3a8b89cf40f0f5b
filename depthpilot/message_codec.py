"""Message codec: MessagePack (the bus wire format) and JSON for the message schemas.

Book sides travel as raw little-endian float64 bytes in a MessagePack extension rather
than lists of floats. Every decoded message has its schema version checked: garbage, an
unknown type or an unsupported version raises :class:`MessageDecodeError` and nothing else.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec
import numpy as np

from depthpilot.message_schemas import AnyMessage, Message


class MessageDecodeError(ValueError):
    """Raised for bytes that are not a valid depthpilot message (of a supported version)."""


# ndarray wire form (MessagePack ext 1): 1 byte dtype code, 1 byte ndim, ndim*uint32 shape, raw bytes.
_EXT_NDARRAY = 1
_DTYPES: dict[int, np.dtype[Any]] = {0: np.dtype("<f8"), 1: np.dtype("<f4"), 2: np.dtype("<i8")}
_DTYPE_CODES = {v: k for k, v in _DTYPES.items()}


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        dt = obj.dtype.newbyteorder("<") if obj.dtype.byteorder == ">" else obj.dtype
        code = _DTYPE_CODES.get(np.dtype(dt))
        if code is None:
            obj = obj.astype("<f8")
            code = 0
        arr = np.ascontiguousarray(obj, dtype=_DTYPES[code])
        header = struct.pack(f"<BB{arr.ndim}I", code, arr.ndim, *arr.shape)
        return msgspec.msgpack.Ext(_EXT_NDARRAY, header + arr.tobytes())
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def _ext_hook(code: int, data: memoryview) -> Any:
    if code != _EXT_NDARRAY:
        raise MessageDecodeError(f"unknown msgpack extension {code}")
    try:
        dcode, ndim = data[0], data[1]
        shape = struct.unpack_from(f"<{ndim}I", data, 2)
        offset = 2 + 4 * ndim
        dtype = _DTYPES[dcode]
        arr = np.frombuffer(data[offset:], dtype=dtype)
        # copy: the decoded message must not pin (or alias) the receive buffer
        return arr.reshape(shape).copy()
    except (KeyError, ValueError, struct.error, IndexError) as exc:
        raise MessageDecodeError(f"bad ndarray payload: {exc}") from exc


def _dec_hook(typ: type, obj: Any) -> Any:
    if typ is np.ndarray:
        if isinstance(obj, np.ndarray):
            return obj
        if isinstance(obj, list):  # JSON form
            return np.asarray(obj, dtype=np.float64)
    raise NotImplementedError(f"cannot decode {typ!r} from {type(obj).__name__}")


_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_decoder = msgspec.msgpack.Decoder(AnyMessage, ext_hook=_ext_hook, dec_hook=_dec_hook)
_json_encoder = msgspec.json.Encoder(enc_hook=lambda o: o.tolist() if isinstance(o, np.ndarray) else _enc_hook(o))
_json_decoder = msgspec.json.Decoder(AnyMessage, dec_hook=_dec_hook)
CONTENT_TYPE = "application/msgpack"


def _check_version(msg: Message) -> Message:
    expected = type(msg).VERSION
    if msg.v != expected:
        raise MessageDecodeError(
            f"unsupported schema version {msg.v} for {msg.type_name!r} (this build speaks v{expected})"
        )
    return msg


def encode(msg: Message) -> bytes:
    """Encode a message to MessagePack bytes (the bus wire format)."""
    return _encoder.encode(msg)


def decode(data: bytes | memoryview) -> Message:
    """Decode bus bytes into a message; raises MessageDecodeError on anything invalid."""
    try:
        msg = _decoder.decode(data)
    except MessageDecodeError:
        raise
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError) as exc:
        raise MessageDecodeError(f"undecodable message: {exc}") from exc
    return _check_version(msg)


def to_json(msg: Message) -> bytes:
    return _json_encoder.encode(msg)


def from_json(data: bytes | str) -> Message:
    try:
        msg = _json_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError) as exc:
        raise MessageDecodeError(f"undecodable message: {exc}") from exc
    return _check_version(msg)


def to_builtins(msg: Message) -> dict[str, Any]:
    """Plain-Python dict (arrays as lists) for storage and JSON APIs."""
    return msgspec.to_builtins(msg, enc_hook=lambda o: o.tolist() if isinstance(o, np.ndarray) else _enc_hook(o))
