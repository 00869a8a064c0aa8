"""This instance's part of every key's limit while the shared schedule (Redis) is lost.

Any gateway instance that holds request partitions may serve any key: requests are keyed by limit domain,
but a record without a key lands on any partition. While Redis answers, the shared schedule paces them all
as one; while it does not, no instance knows what the others send, and each sending a whole limit would
put N instances at N times it. So each keeps to its quota: ``limit // serving``, plus one of the remainder
for the lowest ranks, which add up to the limit over the instances serving. An instance whose quota of a
key is 0 (more instances than the key has calls a second) sends nothing for it until Redis is back.

The group's leader counts and ranks the members it gives partitions to when it assigns them and hands each
its ``(serving, rank)`` in the assignment's user data (``with_quota`` wraps the stock assignors); a
member learns it with its assignment, so every rebalance updates every member. Before its first
assignment, or from a leader that does not say (a rolling upgrade from a version without quotas), an
instance keeps what it last knew, at first the whole limit.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

_FORMAT = struct.Struct(">4sHH")
_MAGIC = b"aq01"  # marks our user data: another assignor's bytes are never read as a quota


@dataclass
class GroupQuota:
    """How many instances serve request partitions, and this one's rank among them (``serving`` for an
    instance given none, which sends nothing while the shared schedule is lost)."""

    serving: int = 1
    rank: int = 0

    def of(self, limit: int) -> int:
        """This instance's calls a second of a key allowing ``limit``, while the shared schedule is lost."""
        if self.rank >= self.serving:
            return 0
        base, extra = divmod(limit, self.serving)
        return base + (1 if self.rank < extra else 0)

    def learn(self, user_data: bytes) -> None:
        """Take ``(serving, rank)`` from an assignment's user data; anything else leaves it as it is."""
        if len(user_data) != _FORMAT.size:
            return
        magic, serving, rank = _FORMAT.unpack(user_data)
        if magic == _MAGIC and serving > 0 and 0 <= rank <= serving:
            self.serving, self.rank = serving, rank


def quota_data(serving: int, rank: int) -> bytes:
    """The user data that tells a member ``(serving, rank)``."""
    return _FORMAT.pack(_MAGIC, serving, rank)


def with_quota(inner: type[AbstractPartitionAssignor], quota: GroupQuota) -> type[AbstractPartitionAssignor]:
    """``inner`` (same name, same assignment) telling every member its quota, and learning this one's."""

    class QuotaAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
        name = inner.name
        version = getattr(inner, "version", 0)

        @classmethod
        def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
            return inner.metadata(topics)

        @classmethod
        def assign(
            cls, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
        ) -> dict[str, ConsumerProtocolMemberAssignment]:
            assigned = inner.assign(cluster, members)
            serving = sorted(m for m, a in assigned.items() if a.partitions())
            ranks = {m: i for i, m in enumerate(serving)}
            count = max(1, len(serving))
            return {
                m: ConsumerProtocolMemberAssignment(
                    a.version, a.assignment, quota_data(count, ranks.get(m, count))
                )
                for m, a in assigned.items()
            }

        @classmethod
        def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
            inner.on_assignment(assignment)
            quota.learn(assignment.user_data or b"")

    return QuotaAssignor
