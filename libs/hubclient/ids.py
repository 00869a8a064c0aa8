"""Request ids: UUIDv7 strings, time-sortable so audit-log replay windows and joins stay cheap."""

from __future__ import annotations

import os
import time
import uuid


def new_request_id(now_ms: int | None = None) -> str:
    """A fresh UUIDv7 (RFC 9562) as a string; ``now_ms`` overrides the embedded epoch milliseconds."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)  # rand_b
    return str(uuid.UUID(int=value))


def request_id_time_ms(request_id: str) -> int:
    """The epoch milliseconds embedded in a UUIDv7 request id."""
    return uuid.UUID(request_id).int >> 80
