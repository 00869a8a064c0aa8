"""No secret leaves an audit or a replay report: the log redaction's field names, applied to any depth.

``services.logs.SECRET_FIELDS`` names the keys whose values are replaced (appkey, appsecret, token, ...);
here they are replaced inside lists too. Token calls (their parameters are credentials) and lent
WebSocket credentials (their data is the secret) are withheld whole.
"""

from __future__ import annotations

from typing import Any

from hubclient.models import RequestKind
from services.logs import REDACTED, SECRET_FIELDS

#: The brokers' token endpoints by id (Kiwoom au10001/au10002; KIS's are paths the hub calls itself).
#: Never in the catalog today; if one is ever recorded, its parameters and answer are withheld whole.
TOKEN_TR_IDS = frozenset({"au10001", "au10002", "tokenp", "revokep", "approval"})


def redact(value: Any) -> Any:
    """``value`` with every secret field's value (at any depth, in dicts and lists) replaced by ``***``."""
    if isinstance(value, dict):
        return {k: REDACTED if str(k).lower() in SECRET_FIELDS else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def withheld(tr_id: str | None, kind: str | None) -> bool:
    """True when a call's parameters and answer are secrets as a whole (token calls, lent credentials)."""
    return (tr_id or "").lower() in TOKEN_TR_IDS or kind == RequestKind.WEBSOCKET_CREDENTIALS.value


def safe_params(params: Any, tr_id: str | None, kind: str | None) -> Any:
    """The parameters as they may be shown."""
    return REDACTED if withheld(tr_id, kind) and params else redact(params)


def safe_data(data: Any, tr_id: str | None, kind: str | None) -> Any:
    """A response's data as it may be shown."""
    return REDACTED if withheld(tr_id, kind) and data is not None else redact(data)
