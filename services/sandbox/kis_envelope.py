"""KIS wire format: the ``rt_cd``/``msg_cd``/``msg1`` envelope, the OAuth error envelope, codes and numbers.

As the real servers do: every number is a string; ``msg1`` of a normal answer is right-padded with spaces
to 80 bytes (EUC-KR width, as the KIS field is defined); gateway errors (``EGW*``) carry an unpadded
``msg1``; throttling and token errors come as HTTP 500 with a normal envelope (status configurable);
``/oauth2/*`` errors use ``{"error_code", "error_description"}`` with HTTP 403. Account and order calls
over the ledger's limit answer ``EGW00215`` the way throttled calls answer ``EGW00201``.

Codes whose exact form the reference could not confirm ([U] there) and that the sandbox therefore fixes
by choice: input-validation failures answer HTTP 200 with ``rt_cd "2"`` and ``OPSQ2001``; an unknown
``tr_id`` answers HTTP 500 ``OPSQ0002``; a real-account order tr_id on the mock server HTTP 500
``OPSQ0002`` "모의투자 TR 이 아닙니다.".
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from services.sandbox.referee import Environment
from services.sandbox.state import SandboxState
from services.sandbox.wire import Reply

MSG1_BYTES = 80

# code -> message, as the KIS portal's error table words them
MESSAGES = {
    "EGW00001": "일시적 오류가 발생했습니다.",
    "EGW00002": "서버 에러가 발생했습니다.",
    "EGW00101": "유효하지 않은 요청입니다.",
    "EGW00102": "AppKey는 필수입니다.",
    "EGW00103": "유효하지 않은 AppKey입니다.",
    "EGW00104": "AppSecret은 필수입니다.",
    "EGW00105": "유효하지 않은 AppSecret입니다.",
    "EGW00115": "권한부여 타입(grant_type)은 필수입니다.",
    "EGW00116": "지원하지 않는 권한부여 타입(grant_type)입니다.",
    "EGW00121": "유효하지 않은 token 입니다.",
    "EGW00123": "기간이 만료된 token 입니다.",
    "EGW00131": "유효하지 않은 hashkey입니다.",
    "EGW00133": "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)",
    "EGW00201": "초당 거래건수를 초과하였습니다.",
    "EGW00215": "원장에서 허용 가능한 초당 거래건수를 초과하였습니다.",
    "EGW00205": "credentials_type이 유효하지 않습니다.(Bearer)",
    "EGW00208": "고객유형(custtype)이 유효하지 않습니다.",
    "EGW00300": "Gateway 라우팅 오류가 발생했습니다.",
    "EGW00301": "연결 시간이 초과되었습니다.직전 거래를 반드시 확인하세요.",
    "EGW02004": "실전투자 도메인은 모의투자 앱키로 호출하실 수 없습니다.",
    "EGW02004/mock": "모의투자 도메인은 실전투자 앱키로 호출하실 수 없습니다.",
    "MCA00124": "해당 서비스를 찾을수 없습니다.",
    "OPSQ0002": "없는 서비스 코드 입니다",
    "OPSQ0002/mock": "모의투자 TR 이 아닙니다.",
    "MCA00000": "정상처리 되었습니다.",
    "KIOK0510": "조회가 완료되었습니다",
    "KIOK0460": "조회 되었습니다.(마지막 자료)",
    "APBK0013": "주문 전송 완료 되었습니다.",
}


def pad_msg1(message: str) -> str:
    """Right-pad a message with spaces to the 80-byte KIS field (Korean counted as 2 bytes)."""
    width = len(message.encode("euc-kr", errors="replace"))
    return message + " " * max(0, MSG1_BYTES - width)


def gt_uid() -> str:
    """A 32-character global transaction id for the ``gt_uid`` response header."""
    return uuid.uuid4().hex.upper()


def headers(tr_id: str | None, tr_cont: str = "D") -> dict[str, str]:
    """Response headers of a TR answer: echo of ``tr_id``, ``tr_cont`` and a fresh ``gt_uid``."""
    out = {"tr_cont": tr_cont, "gt_uid": gt_uid()}
    if tr_id:
        out["tr_id"] = tr_id
    return out


def ok(tr_id: str, msg_cd: str = "MCA00000", tr_cont: str = "D", **outputs: Any) -> Reply:
    """A successful TR answer with padded ``msg1`` and the given ``output``/``output1``/``output2``."""
    body = {"rt_cd": "0", "msg_cd": msg_cd, "msg1": pad_msg1(MESSAGES[msg_cd]), **outputs}
    return Reply(200, body, "ok", headers(tr_id, tr_cont))


def error(status: int, msg_cd: str, tr_id: str | None = None, message: str | None = None) -> Reply:
    """A gateway or business error in the normal envelope (``rt_cd "1"``, unpadded ``msg1``)."""
    body = {"rt_cd": "1", "msg_cd": msg_cd.split("/")[0], "msg1": message or MESSAGES[msg_cd]}
    return Reply(status, body, msg_cd.split("/")[0], headers(tr_id))


def ledger_throttled(status: int, tr_id: str) -> Reply:
    """An account or order call over the ledger's per-second limit (``EGW00215``, HTTP 500 like EGW00201)."""
    return error(status, "EGW00215", tr_id)


def input_error(tr_id: str, field_name: str) -> Reply:
    """A missing or malformed input field (HTTP 200, ``rt_cd "2"``)."""
    body = {"rt_cd": "2", "msg_cd": "OPSQ2001", "msg1": pad_msg1(f"ERROR : INPUT_FIELD_NAME {field_name}")}
    return Reply(200, body, "OPSQ2001", headers(tr_id))


def oauth_error(code: str, status: int = 403, message: str | None = None) -> Reply:
    """An ``/oauth2/*`` error: ``{"error_description", "error_code"}``."""
    return Reply(
        status,
        {"error_description": message or MESSAGES[code], "error_code": code.split("/")[0]},
        code.split("/")[0],
    )


def hash_of(body: dict[str, Any]) -> str:
    """The hashkey of an order body: SHA-256 hex of its canonical JSON."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def num(value: float | int) -> str:
    """A KIS number: a plain decimal string (negative with '-', no '+')."""
    return str(value)


def rate(value: float) -> str:
    """A KIS percentage or ratio with two decimals."""
    return f"{value:.2f}"


def change_pct(price: int, reference: int) -> str:
    """Change against the reference price, percent, two decimals."""
    return rate((price - reference) / reference * 100) if reference else "0.00"


@dataclass(frozen=True, slots=True)
class KisCall:
    """One authenticated TR call as the handlers see it; query keys are upper-cased."""

    state: SandboxState
    env: Environment
    tr_id: str
    appkey: str
    query: dict[str, str]
    body: dict[str, Any] | None
    headers: Mapping[str, str]
    now: datetime

    def param(self, name: str) -> str | None:
        """A query parameter by its upper-case name (KIS accepts any case on GET)."""
        return self.query.get(name)


@dataclass(frozen=True, slots=True)
class TrSpec:
    """How one tr_id is served: HTTP method, handler, environments, and the answer elsewhere."""

    method: str
    handler: Callable[[KisCall], Reply]
    envs: frozenset[str] = frozenset({"real", "mock"})
    unsupported: str = "MCA00124"  # msg_cd (key of MESSAGES) on an environment outside ``envs``
