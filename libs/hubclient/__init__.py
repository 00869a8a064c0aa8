"""hubclient: the wire contract of API Hub and the client every worker uses to call a broker.

This is the Python reference client. Workers in other languages use the hub from ``docs/CONTRACT.md``
(topics, keys, headers and their precedence, every status and reason) and ``schemas/`` (JSON Schema and
``asyncapi.yaml``); ``examples/jvm-spring/`` and ``examples/node/`` are two such clients.
"""

from hubclient.catalog import CATALOG, Paging, TrSpec, lookup
from hubclient.client import HubClient, raise_for_status
from hubclient.errors import (
    HubBackpressure,
    HubError,
    HubNotStarted,
    HubTimeout,
    HubUnavailable,
    InvalidRequest,
    MalformedPayload,
    PagingLimit,
    RequestExpired,
    RequestRejected,
    UnknownOutcome,
    UnknownTrId,
    UpstreamError,
)
from hubclient.ids import new_request_id
from hubclient.models import (
    SCHEMA_VERSION,
    ApiRequest,
    ApiResponse,
    Priority,
    Provider,
    RequestKind,
    Status,
    Timing,
    WebSocketCredentials,
)
from hubclient.paging import paginate
from hubclient.transport import KafkaTransport, Transport

__all__ = [
    "CATALOG",
    "SCHEMA_VERSION",
    "ApiRequest",
    "ApiResponse",
    "HubBackpressure",
    "HubClient",
    "HubError",
    "HubNotStarted",
    "HubTimeout",
    "HubUnavailable",
    "InvalidRequest",
    "KafkaTransport",
    "MalformedPayload",
    "Paging",
    "PagingLimit",
    "Priority",
    "Provider",
    "RequestExpired",
    "RequestKind",
    "RequestRejected",
    "Status",
    "Timing",
    "TrSpec",
    "Transport",
    "UnknownOutcome",
    "UnknownTrId",
    "UpstreamError",
    "WebSocketCredentials",
    "lookup",
    "new_request_id",
    "paginate",
    "raise_for_status",
]
