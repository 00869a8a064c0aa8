"""The replay hub's names: its topics, consumer group and Redis prefix, and the check that they are not the
running gateway's. Kept apart from ``hub`` so parsing the command's options loads no gateway."""

from __future__ import annotations

from dataclasses import dataclass

from services.replay import ReplayError

DEFAULT_PREFIX = "apihub.replay"


@dataclass(frozen=True)
class HubNames:
    """The replay hub's topics, consumer group and Redis key prefix, all derived from one prefix."""

    requests: str
    responses: str
    dlq: str
    group_id: str
    redis_prefix: str

    @classmethod
    def from_prefix(cls, prefix: str) -> HubNames:
        """Topics ``{prefix}.requests|responses|dlq``, group ``{prefix}.gateway``, Redis ``{prefix}:``."""
        return cls(
            f"{prefix}.requests", f"{prefix}.responses", f"{prefix}.dlq", f"{prefix}.gateway", f"{prefix}:"
        )


def check_names(
    names: HubNames, gateway_group: str, gateway_topics: tuple[str, ...], gateway_redis_prefix: str
) -> None:
    """Refuse names that are the running gateway's: its group, its topics, or a Redis key prefix that is
    its own or contains it or lies inside it (the replay gateway would read and write the running one's
    tokens, limiter state and idempotency records) (``ReplayError``)."""
    ours, theirs = names.redis_prefix, gateway_redis_prefix
    if ours.startswith(theirs) or theirs.startswith(ours):
        raise ReplayError(
            f"the replay hub's Redis key prefix {ours!r} overlaps the gateway's ({theirs!r}, "
            "APIHUB_REDIS__KEY_PREFIX): choose another --replay-prefix"
        )
    if names.group_id == gateway_group:
        raise ReplayError(f"the replay's consumer group may not be the gateway's ({gateway_group})")
    shared = sorted({names.requests, names.responses, names.dlq} & set(gateway_topics))
    if shared:
        raise ReplayError(f"the replay hub may not use the gateway's topics: {', '.join(shared)}")
