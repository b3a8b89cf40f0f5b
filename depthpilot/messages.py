"""Typed, versioned message schemas: defined once, used by every service.

Why msgspec (and not pydantic) for messages: messages sit on the hot path (a
250-level book snapshot per symbol many times a second). msgspec Structs
encode/decode to MessagePack roughly an order of magnitude faster than pydantic
models and let book sides travel as raw float64 bytes (a MessagePack extension)
instead of lists of floats: ~15 µs instead of ~300 µs per 250-level snapshot.
Pydantic stays where validation of human input matters (settings, API bodies).

Every message carries:
  * ``v``      schema version of its type (``VERSION`` class attribute),
  * ``id``     a unique message id (dedup key for at-least-once delivery),
  * ``trace``  ``{stage: unix_ns}`` stamps added by each hop, so end-to-end latency
               can be measured (``created`` is stamped on construction).

Decoding garbage, an unknown type or an unsupported version raises
:class:`MessageDecodeError` and nothing else.

This module is the one import point; the schemas live in :mod:`depthpilot.message_schemas`
and the wire format in :mod:`depthpilot.message_codec`.
"""

from __future__ import annotations

from depthpilot.message_codec import (
    CONTENT_TYPE,
    MessageDecodeError,
    decode,
    encode,
    from_json,
    to_builtins,
    to_json,
)
from depthpilot.message_schemas import (
    MESSAGE_BY_TAG,
    MESSAGE_TYPES,
    AnyMessage,
    BookSnapshot,
    ControlCommand,
    ControlReply,
    FeatureVector,
    Fill,
    Message,
    Notification,
    OrderIntent,
    OrderUpdate,
    PositionUpdate,
    RiskEvent,
    ServiceHeartbeat,
    Side,
    Signal,
    Trade,
    instance_name,
    new_id,
    now_ns,
)

__all__ = [
    "Message",
    "MessageDecodeError",
    "BookSnapshot",
    "Trade",
    "FeatureVector",
    "Signal",
    "OrderIntent",
    "OrderUpdate",
    "Fill",
    "PositionUpdate",
    "RiskEvent",
    "ControlCommand",
    "ControlReply",
    "Notification",
    "ServiceHeartbeat",
    "Side",
    "encode",
    "decode",
    "to_json",
    "from_json",
    "to_builtins",
    "MESSAGE_TYPES",
    "MESSAGE_BY_TAG",
    "AnyMessage",
    "CONTENT_TYPE",
    "now_ns",
    "new_id",
    "instance_name",
]
