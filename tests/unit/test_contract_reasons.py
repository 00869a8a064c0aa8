"""docs/CONTRACT.md lists every reason a client can see: the test reads the gateway's source for the reason
strings it answers or dead-letters with and fails on any the contract does not name."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from hubclient.models import Status
from tests.conftest import REPO

CONTRACT = REPO / "docs" / "CONTRACT.md"
SOURCES = [
    *sorted((REPO / "services" / "gateway").rglob("*.py")),
    REPO / "libs" / "hubclient" / "catalog.py",  # the catalog's refusals (missing_params, ...) are answers
]
# Calls whose first argument is a reason: the error tree's constructors and the catalog's refusal.
_REASON_FIRST = {"Invalid", "Expired", "Refused", "GatewayError", "Refusal", "__init__"}
# Calls whose second argument is one: policy's _finish(status, reason), Intake(request, reason), the app's
# _dead_letter(record, reason).
_REASON_SECOND = {"_finish", "Intake", "_dead_letter"}
_REASON = re.compile(r"^[a-z][a-z0-9_]*$")


def _strings(node: ast.AST | None) -> Iterator[str]:
    """The reasons an expression can evaluate to: a string constant, the `reason:` prefix of a string or
    f-string (`f"too_large: {n} bytes"` is reason too_large), either branch of a conditional, the left of
    a concatenation. Anything computed (a variable, a call) names no reason of its own."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value.split(":", 1)[0]
        if _REASON.match(text):
            yield text
    elif isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        if isinstance(first, ast.Constant) and ":" in str(first.value):
            yield from _strings(first)
    elif isinstance(node, ast.IfExp):
        yield from _strings(node.body)
        yield from _strings(node.orelse)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            yield from _strings(value)
    elif isinstance(node, ast.BinOp):
        yield from _strings(node.left)


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def reasons_in(source: str, *, error_tree: bool = False) -> set[str]:
    """Every reason string ``source`` answers or dead-letters with (``error_tree``: ``super().__init__``
    calls name reasons too, as in ``services/gateway/errors.py``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = _callee(node)
            if name in _REASON_FIRST and node.args and (name != "__init__" or error_tree):
                found.update(_strings(node.args[0]))
            if name in _REASON_SECOND and len(node.args) > 1:
                found.update(_strings(node.args[1]))
            for keyword in node.keywords:
                if keyword.arg == "reason":
                    found.update(_strings(keyword.value))
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "reason" for t in node.targets
        ):
            found.update(_strings(node.value))
        elif isinstance(node, ast.ClassDef) and node.name == "Result":  # policy: outcomes become reasons
            for item in node.body:
                if isinstance(item, ast.Assign):
                    found.update(_strings(item.value))
    return found


def source_reasons() -> dict[str, set[str]]:
    """Reason → the files that use it."""
    out: dict[str, set[str]] = {}
    for path in SOURCES:
        for reason in reasons_in(path.read_text(), error_tree=path.name == "errors.py"):
            out.setdefault(reason, set()).add(str(path.relative_to(REPO)))
    return out


def documented() -> set[str]:
    """Every word CONTRACT.md sets in code spans."""
    return set(re.findall(r"`([a-z][a-z0-9_]*)`", CONTRACT.read_text()))


def test_every_reason_in_the_code_is_in_the_contract() -> None:
    """A reason the gateway answers or dead-letters with and CONTRACT.md does not list fails here."""
    missing = {
        reason: sorted(files) for reason, files in source_reasons().items() if reason not in documented()
    }
    assert missing == {}, f"add these reasons to docs/CONTRACT.md: {missing}"


def test_the_scan_finds_the_known_reasons() -> None:
    """The scan is not vacuous: reasons from every kind of source are found."""
    found = set(source_reasons())
    expected = {
        "invalid_request",  # app: intake failures
        "reply_address_conflict",  # intake: an f-string reason
        "too_large",
        "schema",
        "reply_partition_unknown",
        "not_permitted",  # errors: super().__init__
        "backlog_full",
        "token_unavailable",
        "unknown_tr_id",  # admission
        "missing_params",  # hubclient catalog
        "circuit_open",  # pacing
        "deadline_too_close",  # an IfExp
        "throttled",  # policy's Result
        "redelivered_in_flight",  # reason= keyword
    }
    assert expected <= found, expected - found


def test_a_new_reason_would_be_caught() -> None:
    """A reason added to the code, in any of the shapes the gateway uses, is found by the scan."""
    code = (
        'raise Refused("made_up_refusal", "why")\n'
        'answer(request, Status.INVALID, reason="made_up_keyword")\n'
        'reason = f"made_up_prefix: {detail}"\n'
        'raise Expired("made_up_a" if late else "made_up_b")\n'
    )
    assert reasons_in(code) == {
        "made_up_refusal",
        "made_up_keyword",
        "made_up_prefix",
        "made_up_a",
        "made_up_b",
    }
    assert "made_up_refusal" not in documented()


def test_every_status_is_in_the_contract() -> None:
    """Each terminal status of the wire contract is documented."""
    assert {s.value for s in Status} <= documented()
