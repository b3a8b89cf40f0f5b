"""Message bus: one interface, a RabbitMQ (pika) and an in-memory implementation."""

from __future__ import annotations

from typing import Any

from depthpilot.bus.base import (
    Bus,
    BusBackpressure,
    BusError,
    Delivery,
    Handler,
    PublishFailed,
    PublishNacked,
    PublishTimeout,
    RetryableError,
    RpcTimeout,
    Subscription,
    Unroutable,
)

__all__ = [
    "Bus",
    "BusBackpressure",
    "BusError",
    "Delivery",
    "Handler",
    "PublishFailed",
    "PublishNacked",
    "PublishTimeout",
    "RetryableError",
    "RpcTimeout",
    "Subscription",
    "Unroutable",
    "connect_bus",
]


def connect_bus(url: str, service: str, **kwargs: Any) -> Bus:
    """``memory://[name]`` -> in-process bus; ``amqp://``/``amqps://`` -> RabbitMQ. Not started."""
    if url.startswith("memory://"):
        from depthpilot.bus.memory import MemoryBus

        return MemoryBus(url, service)
    from depthpilot.bus.rabbit import RabbitBus

    return RabbitBus(url, service, **kwargs)
