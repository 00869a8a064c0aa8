"""hubclient: the wire contract of API Hub and the client every worker uses to call a broker."""

from hubclient.catalog import CATALOG, Paging, TrSpec, lookup
from hubclient.client import HubClient, raise_for_status
from hubclient.errors import (
    HubBackpressure,
    HubError,
    HubNotStarted,
    HubTimeout,
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
