"""Spring Kafka's request-reply conventions at the intake and on the answer's headers (issue 13)."""

from __future__ import annotations

import os
import uuid

import orjson
import pytest

from hubclient.headers import (
    CORRELATION_ID,
    REPLY_PARTITION,
    REPLY_TOPIC,
    SCHEMA,
    encode_partition,
    header_value,
    response_headers,
)
from hubclient.models import ApiResponse, Status
from services.gateway.intake import read_record
from tests.unit.test_bad_input import REPLY_TOPICS, body, record

SPRING_ID = os.urandom(16)  # what ReplyingKafkaTemplate puts in kafka_correlationId


def spring_headers(topic: bytes = b"api.responses", partition: int = 0) -> list[tuple[str, bytes]]:
    """The headers Spring's template writes: 16 random bytes, the reply topic, a 4-byte partition."""
    return [(CORRELATION_ID, SPRING_ID), (REPLY_TOPIC, topic), (REPLY_PARTITION, encode_partition(partition))]


def without_reply(**params: object) -> dict[str, object]:
    """A request body that leaves its reply address to the headers."""
    fields = body(**params)
    del fields["reply_topic"], fields["reply_partition"]
    return fields


def test_headers_name_the_reply_address_when_the_body_does_not() -> None:
    """A body without reply_topic/reply_partition is served at the address of Spring's headers, and the
    raw correlation bytes are kept for the answer."""
    intake = read_record(record(orjson.dumps(without_reply()), spring_headers(partition=2)), REPLY_TOPICS)
    assert intake.request is not None, intake.reason
    assert (intake.request.reply_topic, intake.request.reply_partition) == ("api.responses", 2)
    assert intake.correlation_id == SPRING_ID


def test_the_body_alone_is_served_exactly_as_before() -> None:
    """No headers at all: the body's address is used and there are no correlation bytes to echo."""
    intake = read_record(record(orjson.dumps(body())), REPLY_TOPICS)
    assert intake.request is not None and intake.request.reply_partition == 0
    assert intake.correlation_id is None


def test_agreeing_body_and_headers_are_served() -> None:
    """Headers that repeat the body's address (as hubclient sends them) are no conflict."""
    intake = read_record(record(orjson.dumps(body()), spring_headers()), REPLY_TOPICS)
    assert intake.request is not None and intake.correlation_id == SPRING_ID


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        (spring_headers(partition=4), "kafka_replyPartition"),
        (spring_headers(topic=b"other.responses"), "kafka_replyTopic"),
    ],
)
def test_a_disagreement_is_invalid_and_answered_at_the_body_address(
    headers: list[tuple[str, bytes]], named: str
) -> None:
    """Body and headers naming different reply addresses: reply_address_conflict, answered at the body's
    address (the body wins) with the correlation bytes kept."""
    fields = body()
    intake = read_record(record(orjson.dumps(fields), headers), REPLY_TOPICS | {"other.responses"})
    assert intake.request is None
    assert intake.reason is not None and intake.reason.startswith("reply_address_conflict:")
    assert named in intake.reason
    assert intake.reply is not None
    assert (intake.reply.request_id, intake.reply.topic, intake.reply.partition) == (
        fields["request_id"],
        "api.responses",
        0,
    )
    assert intake.correlation_id == SPRING_ID


@pytest.mark.parametrize("topic", ["", "no topic!"])
def test_a_conflict_whose_body_topic_is_no_name_is_answered_at_the_headers_address(topic: str) -> None:
    """A body reply_topic that is no topic name beside a header that is one: still a conflict, answered at
    the headers' topic (nothing can be written to the body's)."""
    fields = body()
    fields["reply_topic"] = topic
    intake = read_record(record(orjson.dumps(fields), spring_headers()), REPLY_TOPICS)
    assert intake.reason is not None and intake.reason.startswith("reply_address_conflict:")
    assert intake.reply is not None
    assert (intake.reply.topic, intake.reply.partition) == ("api.responses", 0)


def test_a_reply_partition_written_as_a_whole_float_is_the_body_partition() -> None:
    """JSON Schema's ``integer`` takes ``2.0`` (as the model does): a body naming ``2.0`` against a header
    naming 4 disagrees (it was served at 2 as if the header agreed), and an invalid body naming ``2.0`` is
    answered at its own partition, not the header's."""
    fields = body()
    fields["reply_partition"] = 2.0
    conflict = read_record(record(orjson.dumps(fields), spring_headers(partition=4)), REPLY_TOPICS)
    assert conflict.reason is not None and conflict.reason.startswith("reply_address_conflict:")
    assert conflict.reply is not None and conflict.reply.partition == 2
    agreeing = read_record(record(orjson.dumps(fields), spring_headers(partition=2)), REPLY_TOPICS)
    assert agreeing.request is not None and agreeing.request.reply_partition == 2
    fields["provider"] = "NYSE"
    invalid = read_record(record(orjson.dumps(fields), spring_headers(partition=4)), REPLY_TOPICS)
    assert invalid.reason is not None and invalid.reason.startswith("reply_address_conflict:")
    del fields["provider"]
    refused = read_record(record(orjson.dumps(fields)), REPLY_TOPICS)
    assert refused.reason is not None and refused.reason.startswith("schema: provider")
    assert refused.reply is not None and refused.reply.partition == 2


def test_an_invalid_body_is_answerable_from_spring_headers() -> None:
    """A schema error in a body without a reply address still gets an answer at the headers' address,
    under the body's request id, with the correlation bytes kept."""
    fields = without_reply()
    fields["provider"] = "NYSE"
    intake = read_record(record(orjson.dumps(fields), spring_headers(partition=1)), REPLY_TOPICS)
    assert intake.request is None and intake.reason is not None and intake.reason.startswith("schema:")
    assert intake.reply is not None
    assert (intake.reply.request_id, intake.reply.partition) == (fields["request_id"], 1)
    assert intake.correlation_id == SPRING_ID


def test_without_a_request_id_the_spring_correlation_still_gets_an_answer() -> None:
    """Unparseable bytes with Spring's headers: answered under an id derived from the record's place,
    stable across redeliveries; without a correlation header there is no way to match, so no answer."""
    first = read_record(record(b"{not json", spring_headers()), REPLY_TOPICS)
    again = read_record(record(b"{not json", spring_headers()), REPLY_TOPICS)
    assert first.reply is not None and first.reply == again.reply
    assert uuid.UUID(first.reply.request_id)
    headerless = [(k, v) for k, v in spring_headers() if k != CORRELATION_ID]
    assert read_record(record(b"{not json", headerless), REPLY_TOPICS).reply is None


def test_a_header_reply_topic_is_still_held_to_the_allowed_topics() -> None:
    """A reply topic named only by the header must be an allowed one, as the body's must."""
    intake = read_record(
        record(orjson.dumps(without_reply()), spring_headers(topic=b"elsewhere")), REPLY_TOPICS
    )
    assert intake.request is None
    assert intake.reason == "reply_topic_not_allowed: elsewhere"


def test_response_echoes_the_correlation_bytes_or_the_request_id() -> None:
    """The answer's kafka_correlationId is the request's bytes unchanged, else the request id."""
    response = ApiResponse(request_id=str(uuid.uuid4()), status=Status.INVALID, reason="invalid_request")
    echoed = response_headers(response, None, SPRING_ID)
    assert header_value(echoed, CORRELATION_ID) == SPRING_ID
    assert header_value(echoed, SCHEMA) == b"1"
    plain = response_headers(response, None)
    assert header_value(plain, CORRELATION_ID) == response.request_id.encode()
