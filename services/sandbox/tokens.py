"""Credentials and access tokens of the simulated brokers.

How an appkey is recognised as belonging to an environment:

- If the environment has an allow-list (settings ``kis_real_appkeys``, ...), exactly the keys on it belong
  there; a key listed for the sibling environment is "wrong environment" (KIS ``EGW02004``, Kiwoom
  ``8030``), any other key is invalid (KIS ``EGW00103``, Kiwoom ``8001``).
- Otherwise any key of the right shape is accepted, and it is bound to the environment where it first
  obtains a token, together with its secret. From then on it is "wrong environment" on the sibling server,
  and a different secret is refused. ``POST /_sandbox/reset`` forgets the bindings.

Token rules (per provider environment and appkey): one issuance per ``token_issue_interval_s`` (a refused
attempt does not restart the interval); a re-issue inside the provider's reuse window returns the same token
with the same absolute expiry (KIS: 6 h; Kiwoom: a new token by default); tokens live
``token_lifetime_s``; revoked or maintenance-invalidated tokens are dead at once and are never handed out
again. All times come from the simulated clock.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

import orjson

from services.sandbox.clock import SimClock


class CredentialCheck(Enum):
    """Outcome of checking an appkey/secret pair for one environment."""

    OK = "ok"
    MISSING_KEY = "missing_key"
    BAD_KEY = "bad_key"
    MISSING_SECRET = "missing_secret"  # noqa: S105 - an outcome name, not a secret
    BAD_SECRET = "bad_secret"  # noqa: S105 - same
    OTHER_ENVIRONMENT = "other_environment"


class TokenStatus(Enum):
    """Outcome of checking a bearer token for one environment."""

    OK = "ok"
    MISSING = "missing"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    INVALIDATED = "invalidated"
    OTHER_ENVIRONMENT = "other_environment"
    OTHER_APPKEY = "other_appkey"


class Credentials:
    """Appkey shapes, allow-lists and key-to-environment bindings of one provider."""

    def __init__(
        self,
        allow_lists: dict[str, Iterable[str]],
        key_ok: Callable[[str], bool],
        secret_ok: Callable[[str], bool],
    ) -> None:
        self._allow = {env: frozenset(keys) for env, keys in allow_lists.items() if keys}
        self._key_ok = key_ok
        self._secret_ok = secret_ok
        self._bound: dict[str, tuple[str, str]] = {}

    def environment_of(self, appkey: str) -> str | None:
        """The environment name an appkey belongs to, if known."""
        for env, keys in self._allow.items():
            if appkey in keys:
                return env
        bound = self._bound.get(appkey)
        return bound[0] if bound else None

    def check(self, env: str, appkey: str | None, secret: str | None) -> CredentialCheck:
        """Validate a key (and a secret, when given) for environment ``env`` (``real``/``mock``)."""
        if not appkey:
            return CredentialCheck.MISSING_KEY
        if not self._key_ok(appkey):
            return CredentialCheck.BAD_KEY
        home = self.environment_of(appkey)
        if home is not None and home != env:
            return CredentialCheck.OTHER_ENVIRONMENT
        if home is None and env in self._allow:
            return CredentialCheck.BAD_KEY
        if secret is None:
            return CredentialCheck.OK
        if not secret:
            return CredentialCheck.MISSING_SECRET
        if not self._secret_ok(secret):
            return CredentialCheck.BAD_SECRET
        bound = self._bound.get(appkey)
        if bound is not None and bound[1] != secret:
            return CredentialCheck.BAD_SECRET
        return CredentialCheck.OK

    def bind(self, env: str, appkey: str, secret: str) -> None:
        """Remember that ``appkey`` (with ``secret``) belongs to ``env``; the first binding wins."""
        self._bound.setdefault(appkey, (env, secret))

    def reset(self) -> None:
        """Forget every binding (allow-lists stay)."""
        self._bound.clear()


@dataclass
class TokenRecord:
    """One access token."""

    token: str
    appkey: str
    env: str
    issued_at: datetime  # simulated KST
    expires_at: datetime  # simulated KST
    dead: bool = False  # revoked or invalidated by maintenance
    invalidated: bool = False


@dataclass(frozen=True, slots=True)
class Issue:
    """Result of an issuance attempt: a record, or a refusal with the seconds left in the interval."""

    record: TokenRecord | None
    new: bool = False
    retry_after_s: float = 0.0


def kis_style_token(now: datetime, lifetime_s: float) -> str:
    """A JWT-shaped opaque token like KIS's (no credential inside)."""

    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(obj)).rstrip(b"=").decode()

    issued = int(now.timestamp())
    payload = {
        "sub": "token",
        "aud": uuid.uuid4().hex,
        "iss": "unogw",
        "prdt_cd": "",
        "iat": issued,
        "exp": issued + int(lifetime_s),
        "jti": uuid.uuid4().hex,
    }
    return f"{part({'typ': 'JWT', 'alg': 'HS512'})}.{part(payload)}.{secrets.token_urlsafe(64)}"


def kiwoom_style_token(now: datetime, lifetime_s: float) -> str:
    """An opaque token like Kiwoom's."""
    del now, lifetime_s
    return secrets.token_urlsafe(64)


class TokenBook:
    """Tokens of every environment of one provider (so a token from the sibling server is recognised)."""

    def __init__(
        self,
        clock: SimClock,
        lifetime_s: float,
        reuse_s: float,
        interval_s: float,
        make_token: Callable[[datetime, float], str],
    ) -> None:
        self._clock = clock
        self._lifetime_s = lifetime_s
        self._reuse_s = reuse_s
        self._interval_s = interval_s
        self._make = make_token
        self._by_token: dict[str, TokenRecord] = {}
        self._latest: dict[tuple[str, str], TokenRecord] = {}
        self._last_issue_s: dict[tuple[str, str], float] = {}

    def issue(self, env: str, appkey: str) -> Issue:
        """Issue (or re-issue) a token for ``appkey`` on ``env``, honouring interval and reuse window."""
        key = (env, appkey)
        mono = self._clock.monotonic()
        last = self._last_issue_s.get(key)
        if last is not None and mono - last < self._interval_s:
            return Issue(None, retry_after_s=self._interval_s - (mono - last))
        now = self._clock.now()
        self._last_issue_s[key] = mono
        latest = self._latest.get(key)
        if (
            latest is not None
            and not latest.dead
            and latest.expires_at > now
            and (now - latest.issued_at).total_seconds() < self._reuse_s
        ):
            return Issue(latest, new=False)
        record = TokenRecord(
            token=self._make(now, self._lifetime_s),
            appkey=appkey,
            env=env,
            issued_at=now,
            expires_at=(now + timedelta(seconds=self._lifetime_s)).replace(microsecond=0),
        )
        self._by_token[record.token] = record
        self._latest[key] = record
        return Issue(record, new=True)

    def check(
        self, env: str, token: str | None, appkey: str | None = None
    ) -> tuple[TokenStatus, TokenRecord | None]:
        """Is ``token`` usable on ``env`` (and, when given, for ``appkey``) right now?"""
        if not token:
            return TokenStatus.MISSING, None
        record = self._by_token.get(token)
        if record is None:
            return TokenStatus.UNKNOWN, None
        if record.env != env:
            return TokenStatus.OTHER_ENVIRONMENT, record
        if appkey is not None and record.appkey != appkey:
            return TokenStatus.OTHER_APPKEY, record
        if record.dead:
            return (TokenStatus.INVALIDATED if record.invalidated else TokenStatus.UNKNOWN), record
        if record.expires_at <= self._clock.now():
            return TokenStatus.EXPIRED, record
        return TokenStatus.OK, record

    def owner(self, token: str | None) -> TokenRecord | None:
        """The record of a token whatever its state (used to attribute arrivals to an appkey)."""
        return self._by_token.get(token) if token else None

    def revoke(self, env: str, token: str, appkey: str | None = None) -> bool:
        """Kill a live token of ``env``; False if it is not a live token there."""
        status, record = self.check(env, token, appkey)
        if status is not TokenStatus.OK or record is None:
            return False
        record.dead = True
        return True

    def invalidate_all(self) -> int:
        """Maintenance: kill every live token now; returns how many were live."""
        count = 0
        for record in self._by_token.values():
            if not record.dead:
                record.dead = True
                record.invalidated = True
                count += 1
        return count

    def reset(self) -> None:
        """Forget every token and issuance time."""
        self._by_token.clear()
        self._latest.clear()
        self._last_issue_s.clear()
