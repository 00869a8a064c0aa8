"""JSON Schema of the wire contract, generated from the models and checked into ``schemas/``."""

from __future__ import annotations

from typing import Any

from hubclient.models import SCHEMA_VERSION, ApiRequest, ApiResponse, WebSocketCredentials

_BASE_ID = "https://apihub.local/schemas"
_HEADERS = {
    "kafka_correlationId": "any bytes the client chooses (Spring: 16 random bytes), echoed unchanged on the "
    "answer; without it the answer's header is request_id as UTF-8 bytes",
    "kafka_replyTopic": "reply_topic as UTF-8 bytes; used when the body has no reply_topic",
    "kafka_replyPartition": "reply_partition as a 4-byte big-endian signed int (Spring Kafka's format); used "
    "when the body has no reply_partition",
    "apihub-caller": "caller as UTF-8 bytes",
    "apihub-deadline-ms": "deadline_ms as decimal text",
    "apihub-schema": "the schema version as decimal text",
    "note": "the JSON body is authoritative and suffices alone; the reply address may come from the headers "
    "instead, the body winning when both name it (a disagreement is answered invalid); docs/CONTRACT.md",
}
#: Request fields a client may leave to the Kafka headers (``kafka_replyTopic`` / ``kafka_replyPartition``).
HEADER_FIELDS = ("reply_topic", "reply_partition")


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name → schema document for every envelope."""
    out: dict[str, dict[str, Any]] = {}
    # A request is what the gateway accepts (defaults may be omitted); a response is what it writes.
    for name, model, topic, mode in (
        ("api-request", ApiRequest, "api.requests", "validation"),
        ("api-response", ApiResponse, "api.responses", "serialization"),
        # not a message of its own: the `data` of an ok answer to a websocket_credentials request
        ("websocket-credentials", WebSocketCredentials, "api.responses (data)", "serialization"),
    ):
        schema = model.model_json_schema(mode=mode)  # type: ignore[arg-type]
        if model is ApiRequest:  # the model wants them; on the wire the headers may carry them instead
            schema["required"] = [f for f in schema["required"] if f not in HEADER_FIELDS]
        doc = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{_BASE_ID}/{name}-v{SCHEMA_VERSION}.json",
            "x-apihub-schema-version": SCHEMA_VERSION,
            "x-apihub-topic": topic,
            **({"x-apihub-headers": _HEADERS} if model is not WebSocketCredentials else {}),
            **schema,
        }
        out[f"{name}.schema.json"] = doc
    return out
