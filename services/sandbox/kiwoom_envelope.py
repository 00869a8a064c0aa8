"""Kiwoom wire format: ``return_code``/``return_msg``, bracketed detail codes, paging headers.

Errors look as observed in the wild rather than as the official sample code assumes: ``return_code`` is a
small category (1 unexpected, 2 input, 3 authentication, 5 rate limit) and the documented code sits in
brackets inside ``return_msg``, e.g. ``{"return_code": 5, "return_msg": "허용된 요청 개수를 초과하였습니다
[1700:허용된 요청 개수를 초과하였습니다. API ID=ka10080]"}``. Throttling is HTTP 429 by default
(``kiwoom_throttle_status``), every other answer HTTP 200. Paging uses the response headers ``cont-yn: Y``
and an opaque ``next-key``; the client echoes both as request headers. A next-key binds the request's
api-id, stock and options, so it cannot be replayed with a different body (``1517``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from services.sandbox.referee import Environment
from services.sandbox.state import SandboxState
from services.sandbox.wire import Reply

CONTENT_TYPE = "application/json;charset=UTF-8"
OK_MESSAGE = "정상적으로 처리되었습니다"

_CATEGORIES = {
    1: "예기치 못한 에러가 발생했습니다",
    2: "입력 값이 올바르지 않습니다",
    3: "인증에 실패했습니다",
    5: "허용된 요청 개수를 초과하였습니다",
}
# detail code -> (return_code category, text)
DETAILS: dict[int, tuple[int, str]] = {
    1501: (2, "API ID가 Null이거나 값이 없습니다"),
    1504: (2, "해당 URI에서는 지원하는 API ID가 아닙니다"),
    1505: (2, "해당 API ID는 존재하지 않습니다"),
    1511: (2, "필수 입력 값에 값이 존재하지 않습니다"),
    1517: (2, "입력 값 형식이 올바르지 않습니다"),
    1700: (5, "허용된 요청 개수를 초과하였습니다"),
    1902: (2, "종목 정보가 없습니다"),
    1999: (1, "예기치 못한 에러가 발생했습니다"),
    8001: (3, "App Key와 Secret Key 검증에 실패했습니다"),
    8005: (3, "Token이 유효하지 않습니다"),
    8011: (2, "grant_type이 누락되었습니다"),
    8012: (2, "grant_type이 올바르지 않습니다"),
    8020: (2, "appkey 또는 secretkey가 누락되었습니다"),
    8030: (3, "투자구분(실전/모의)이 달라서 Appkey를 사용할수가 없습니다"),
    8031: (3, "투자구분(실전/모의)이 달라서 Token를 사용할수가 없습니다"),
}


def error(detail: int, api_id: str = "", status: int = 200, extra: str = "") -> Reply:
    """An error answer: category in ``return_code``, ``[code:text]`` inside ``return_msg``."""
    category, text = DETAILS[detail]
    if detail == 1700:
        text = f"{text}. API ID={api_id}"
    elif extra:
        text = f"{text}({extra})"
    body = {"return_code": category, "return_msg": f"{_CATEGORIES[category]}[{detail}:{text}]"}
    headers = {"api-id": api_id} if api_id else {}
    return Reply(status, body, str(detail), headers)


def class_throttled(api_id: str, status: int, quota_per_s: int) -> Reply:
    """A call over its class's limit (orders, reads): ``1700`` naming the quota, as live answers do
    (``[1700:허용된 요청 개수를 초과하였습니다. 유량=1, API ID=kt10001]``)."""
    reply = error(1700, api_id, status)
    reply.body["return_msg"] = reply.body["return_msg"].replace(". API ID=", f". 유량={quota_per_s}, API ID=")
    return reply


def ok(api_id: str, body: dict[str, Any], next_key: str | None = None) -> Reply:
    """A successful answer with paging headers (``cont-yn: Y`` + ``next-key`` when more follow)."""
    headers = {"api-id": api_id, "cont-yn": "Y" if next_key else "N", "next-key": next_key or ""}
    return Reply(200, {**body, "return_code": 0, "return_msg": OK_MESSAGE}, "ok", headers)


@dataclass(frozen=True, slots=True)
class KiwoomCall:
    """One authenticated call as the handlers see it."""

    state: SandboxState
    env: Environment
    api_id: str
    appkey: str
    body: dict[str, Any]
    headers: Mapping[str, str]
    now: datetime

    @property
    def continuing(self) -> bool:
        """True when the client asks for the next page (``cont-yn: Y``)."""
        return self.headers.get("cont-yn", "") == "Y"


Handler = Callable[[KiwoomCall], Reply]


def _binding(parts: tuple[str, ...]) -> str:
    return f"{zlib.crc32('|'.join(parts).encode()):08x}"


def encode_next_key(day: date, index: int, binding: tuple[str, ...]) -> str:
    """Opaque continuation key: position (day, row index) plus a checksum of the request."""
    return f"{day:%Y%m%d}{index:06d}{_binding(binding)}"


def decode_next_key(key: str, binding: tuple[str, ...]) -> tuple[date, int] | None:
    """The position in a next-key, or None if it is malformed or belongs to another request."""
    if len(key) != 22 or key[14:] != _binding(binding) or not key[:14].isdigit():
        return None
    try:
        return datetime.strptime(key[:8], "%Y%m%d").date(), int(key[8:14])
    except ValueError:
        return None
