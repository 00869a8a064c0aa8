"""Caller permissions: the grant table decides, unlisted callers get read-only quotes, files are checked."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from hubclient.catalog import TrSpec, entries, lookup
from hubclient.models import WEBSOCKET_CREDENTIALS_TR_ID, ApiRequest, Provider, RequestKind
from services.gateway.errors import NotPermitted
from services.gateway.permissions import (
    Grant,
    Permissions,
    check_lending,
    check_permitted,
    load_permissions,
    parse_permissions,
    permitted,
)
from services.settings import SettingsInvalid

EXAMPLE = Path(__file__).resolve().parents[2] / "ops" / "permissions.example.yaml"
KIS, KIWOOM = Provider.KIS, Provider.KIWOOM
PRICE = lookup(KIS, "FHKST01010100")  # KIS quote
BARS = lookup(KIWOOM, "ka10080")  # Kiwoom read
KIS_ORDER = next(e for e in entries(KIS) if e.kind == "order")
KIS_ACCOUNT = next(e for e in entries(KIS) if e.kind == "account")
KIWOOM_ORDER = next(e for e in entries(KIWOOM) if e.kind == "order_write")
KIWOOM_ACCOUNT = next(e for e in entries(KIWOOM) if e.kind == "account_read")

TABLE = Permissions(
    callers={
        "demo": (Grant(providers=frozenset({KIS}), tr_ids=frozenset({"FHKST01010100"})),),
        "trader": (Grant(kinds=frozenset({"quote", "read", "account", "account_read"})),),
        "kis-orders": (Grant(providers=frozenset({KIS}), limit_classes=frozenset({"ledger"})),),
        "nobody": (),
    }
)


@pytest.mark.parametrize(
    ("caller", "spec", "expected"),
    [
        ("demo", PRICE, True),  # named tr_id
        ("demo", lookup(KIS, "FHKST03010200"), False),  # another tr_id of the same provider
        ("demo", BARS, False),  # named tr_id, other provider
        ("trader", KIS_ACCOUNT, True),
        ("trader", KIWOOM_ACCOUNT, True),
        ("trader", KIS_ORDER, False),  # account reads do not grant orders
        ("trader", KIWOOM_ORDER, False),
        ("kis-orders", KIS_ORDER, True),  # by limit class
        ("kis-orders", KIS_ACCOUNT, True),
        ("kis-orders", KIWOOM_ORDER, False),  # the grant names KIS only
        ("stranger", PRICE, True),  # unlisted: read-only quotes
        ("stranger", BARS, True),
        ("stranger", KIS_ACCOUNT, False),
        ("stranger", KIWOOM_ACCOUNT, False),
        ("stranger", KIS_ORDER, False),
        ("stranger", KIWOOM_ORDER, False),
        ("nobody", PRICE, False),  # listed with no grants: nothing at all
    ],
)
def test_permitted_table(caller: str, spec: TrSpec, expected: bool) -> None:
    """Each caller may make exactly the calls one of its grants covers; unlisted callers only read quotes."""
    assert permitted(TABLE, caller, spec) is expected


@pytest.mark.parametrize("spec", [PRICE, KIS_ORDER, KIWOOM_ORDER, KIWOOM_ACCOUNT])
def test_without_a_table_everything_is_permitted(spec: TrSpec) -> None:
    """No permissions file keeps today's behaviour: every caller may make every call."""
    assert permitted(None, "anyone", spec)


def test_no_order_is_read_only() -> None:
    """The read-only default covers no order and no account call of either provider."""
    for provider in (KIS, KIWOOM):
        for spec in entries(provider):
            if not spec.idempotent or "account" in spec.kind:
                assert not permitted(Permissions(), "stranger", spec), spec.key


def test_refusal_raises_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    """A refused call raises rejected/not_permitted and logs request.not_permitted with caller and tr_id."""
    request = ApiRequest(
        request_id=str(uuid.uuid4()),
        caller="stranger",
        provider=KIS,
        tr_id=KIS_ORDER.tr_id,
        deadline_ms=2_000_000_000_000,
        created_at_ms=1_000_000_000_000,
        reply_topic="api.responses",
        reply_partition=0,
    )
    with caplog.at_level(logging.WARNING), pytest.raises(NotPermitted) as raised:
        check_permitted(TABLE, request, KIS_ORDER)
    assert raised.value.reason == "not_permitted" and raised.value.status.value == "rejected"
    assert not raised.value.retriable
    record = next(r for r in caplog.records if r.msg == "request.not_permitted")
    fields = record.fields  # type: ignore[attr-defined]
    assert (fields["caller"], fields["provider"], fields["tr_id"]) == ("stranger", "KIS", KIS_ORDER.tr_id)


def test_example_file_gives_each_worker_and_the_demo_what_they_use() -> None:
    """ops/permissions.example.yaml loads and grants the workers and the demo their calls, and no order."""
    table = load_permissions(EXAMPLE)
    uses = {
        "history-collector": [(KIS, "FHKST03010100"), (KIS, "FHKST03010230"), (KIWOOM, "ka10081")],
        "verification-worker": [(KIS, "FHKST03010200"), (KIWOOM, "ka10080")],
        "recovery-worker": [(KIS, "FHKST01010300"), (KIWOOM, "ka10079")],
        "demo": [(KIS, "FHKST01010100"), (KIS, "FHKST03010200"), (KIWOOM, "ka10080")],
    }
    for caller, calls in uses.items():
        for provider, tr_id in calls:
            assert permitted(table, caller, lookup(provider, tr_id)), (caller, tr_id)
        assert not permitted(table, caller, KIS_ORDER) and not permitted(table, caller, KIWOOM_ACCOUNT)


@pytest.mark.parametrize(
    "raw",
    [
        [],
        {"callers": {"a": {"kinds": ["quote"]}}},  # grants must be a list
        {"callers": {"a": [{"kind": ["quote"]}]}},  # misspelt field
        {"callers": {"a": [{"providers": ["NASDAQ"]}]}},
        {"callers": {"a": [{"tr_ids": "FHKST01010100"}]}},  # a string, not a list
        {"caller": {}},
    ],
)
def test_malformed_files_are_refused(raw: object) -> None:
    """A permissions file the gateway does not fully understand stops it rather than granting by accident."""
    with pytest.raises(ValueError):
        parse_permissions(raw)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot read {path}: No such file or directory"),
        ("callers: [\n", "{path} is not YAML: "),
        ("bogus: 1\n", "{path}: a permissions file is a mapping"),
        (b"\xff\xfe", "{path} is not YAML: "),
    ],
)
def test_a_file_it_cannot_use_is_a_refused_setting(
    tmp_path: Path, content: str | bytes | None, says: str
) -> None:
    """Missing, not YAML, not UTF-8 or not a permissions table: ``SettingsInvalid`` naming
    APIHUB_PERMISSIONS_FILE, which stops the gateway with the settings' error lines (a traceback before)."""
    path = tmp_path / "permissions.yaml"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(SettingsInvalid) as refused:
        load_permissions(path)
    [(variable, reason)] = refused.value.problems
    assert variable == "APIHUB_PERMISSIONS_FILE" and reason.startswith(says.format(path=path))


def lend(caller: str, provider: Provider) -> ApiRequest:
    """A websocket_credentials request of ``caller``."""
    return ApiRequest(
        request_id=str(uuid.uuid4()),
        provider=provider,
        tr_id=WEBSOCKET_CREDENTIALS_TR_ID,
        caller=caller,
        deadline_ms=2**41,
        created_at_ms=1,
        reply_topic="api.responses",
        reply_partition=0,
        kind=RequestKind.WEBSOCKET_CREDENTIALS,
    )


@pytest.mark.parametrize(
    ("caller", "provider", "lent"),
    [
        ("kis-service", KIS, True),
        ("kis-service", KIWOOM, False),  # its grant names KIS only
        ("trader", KIS, False),  # kinds (account reads, quotes) never lend a credential
        ("everything", KIWOOM, False),  # nor do limit classes
        ("stranger", KIS, False),  # unlisted: read-only quotes, no credential
        ("stranger", KIWOOM, False),
    ],
)
def test_a_websocket_credential_is_lent_only_by_a_grant_that_names_it(
    caller: str, provider: Provider, lent: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The credential is the gateway's own (Kiwoom's is the token every call uses): only a grant naming
    ``websocket_credentials`` for the provider lends it; without a table everyone may have it."""
    table = Permissions(
        callers={
            **TABLE.callers,
            "kis-service": (
                Grant(providers=frozenset({KIS}), tr_ids=frozenset({WEBSOCKET_CREDENTIALS_TR_ID})),
            ),
            "everything": (Grant(limit_classes=frozenset({"query", "ledger", "order"})),),
        }
    )
    check_lending(None, lend(caller, provider))
    if lent:
        check_lending(table, lend(caller, provider))
        return
    with caplog.at_level(logging.WARNING), pytest.raises(NotPermitted):
        check_lending(table, lend(caller, provider))
    assert any(getattr(r, "fields", {}).get("caller") == caller for r in caplog.records)
