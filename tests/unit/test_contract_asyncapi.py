"""schemas/asyncapi.yaml: generated from the models, and valid for the official AsyncAPI parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from services import asyncapi, schemas
from tests.conftest import REPO
from tests.toolchains import node, npm_modules

PARSER = {"@asyncapi/parser": "3.6.3"}
CHECK = Path(__file__).with_name("asyncapi_check.cjs")
ERROR = 0  # the parser's DiagnosticSeverity.Error


def diagnostics(document: Path) -> list[dict[str, object]]:
    """The official parser's diagnostics for ``document`` (the parser installed from npm on first use)."""
    modules = npm_modules("asyncapi-parser", PARSER, timeout_s=300)
    done = node(CHECK, [str(document)], modules, timeout_s=120)
    assert done.returncode == 0, done.stderr
    found: list[dict[str, object]] = json.loads(done.stdout)
    return found


def test_checked_in_asyncapi_matches_the_models() -> None:
    """schemas/asyncapi.yaml is what `apihub schemas generate` writes from the models today."""
    assert (schemas.SCHEMAS_DIR / asyncapi.FILE_NAME).read_bytes() == asyncapi.rendered()
    assert asyncapi.FILE_NAME not in schemas.stale()


def test_drift_is_detected(tmp_path: Path) -> None:
    """An edited asyncapi.yaml is reported stale."""
    schemas.write(tmp_path)
    (tmp_path / asyncapi.FILE_NAME).write_text("asyncapi: 3.0.0\n")
    assert schemas.stale(tmp_path) == [asyncapi.FILE_NAME]


def test_document_names_the_topics_headers_and_reply() -> None:
    """Channels carry the declared topic names and partitions, the request-reply operation replies on the
    response channel, and each message names its correlation header and key."""
    doc = asyncapi.document()
    channels = doc["channels"]
    assert [channels[c]["address"] for c in ("requests", "responses", "deadLetters")] == [
        "api.requests",
        "api.responses",
        "api.requests.dlq",
    ]
    assert channels["requests"]["bindings"]["kafka"]["partitions"] == 6
    assert channels["callerRequests"]["address"] == "api.requests.{caller}"
    assert set(channels["callerRequests"]["parameters"]) == {"caller"}
    for operation in ("serveRequest", "serveCallerRequest"):  # a caller's own topic is answered alike
        assert doc["operations"][operation]["reply"]["channel"] == {"$ref": "#/channels/responses"}
    reply = doc["operations"]["serveRequest"]["reply"]
    assert reply["address"]["location"] == "$message.header#/kafka_replyTopic"
    messages = doc["components"]["messages"]
    for name in ("ApiRequest", "ApiResponse"):
        assert "kafka_correlationId" in messages[name]["headers"]["properties"]
        assert "key" in messages[name]["bindings"]["kafka"]
    request = doc["components"]["schemas"]["ApiRequest"]
    assert "reply_topic" not in request["required"] and "request_id" in request["required"]
    assert "#/$defs/" not in json.dumps(doc)


def test_official_parser_finds_no_error() -> None:
    """@asyncapi/parser, run with the machine's Node.js, reports no diagnostic of severity error."""
    found = diagnostics(schemas.SCHEMAS_DIR / asyncapi.FILE_NAME)
    assert [d for d in found if d["severity"] == ERROR] == []


def test_official_parser_catches_a_broken_document(tmp_path: Path) -> None:
    """The check can fail: a reply pointing at a channel that does not exist is an error."""
    doc = asyncapi.document()
    doc["operations"]["serveRequest"]["reply"]["channel"] = {"$ref": "#/channels/nowhere"}
    broken = tmp_path / "asyncapi.yaml"
    broken.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert [d for d in diagnostics(broken) if d["severity"] == ERROR] != []


@pytest.mark.parametrize("name", ["ApiRequest", "ApiResponse", "WebSocketCredentials"])
def test_every_envelope_is_a_component(name: str) -> None:
    """Each envelope of the JSON Schemas appears under components/schemas."""
    assert name in asyncapi.document()["components"]["schemas"]
    assert REPO.joinpath("schemas", asyncapi.FILE_NAME).is_file()
