"""One scrape of a ``/metrics`` page, read into samples that can be summed by name and labels.

``Metrics.parse`` reads the Prometheus text format with prometheus_client's own parser. Lookups go by
*sample* name, as the page shows it: a counter ``apihub_requests`` appears as ``apihub_requests_total``, a
histogram ``apihub_upstream_latency_seconds`` as ``..._bucket`` (label ``le``), ``..._sum`` and
``..._count``. A name or label set that is absent sums to 0, so a service that has not yet seen an event
reads as zero, never as an error.

Pure helpers for two scrapes: ``increase`` (a counter's growth, a restart read as a reset to zero, as
Prometheus does) and ``quantile`` (``histogram_quantile``: linear inside the bucket that holds the rank).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

#: One histogram's cumulative buckets: (upper bound ``le``, observations at or below it), ascending.
Buckets = Sequence[tuple[float, float]]


class MetricsFormatError(ValueError):
    """The page is not in the Prometheus text format."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One line of the page: a sample name, its labels and its value."""

    name: str
    labels: Mapping[str, str]
    value: float


class Metrics:
    """The samples of one scrape, summed on demand by name and by labels."""

    def __init__(self, samples: Iterable[Sample]) -> None:
        self._by_name: dict[str, list[Sample]] = defaultdict(list)
        for sample in samples:
            self._by_name[sample.name].append(sample)

    @classmethod
    def parse(cls, text: str) -> Metrics:
        """Read a page in the Prometheus text format; raises ``MetricsFormatError``."""
        try:
            return cls(
                Sample(s.name, dict(s.labels), float(s.value))
                for family in text_string_to_metric_families(text)
                for s in family.samples
            )
        except (ValueError, TypeError, IndexError) as exc:
            raise MetricsFormatError(str(exc) or type(exc).__name__) from exc

    def _matching(self, name: str, labels: Mapping[str, str]) -> Iterable[Sample]:
        for sample in self._by_name.get(name, ()):
            if all(sample.labels.get(key) == value for key, value in labels.items()):
                yield sample

    def has(self, name: str) -> bool:
        """True when the page holds at least one sample called ``name``."""
        return bool(self._by_name.get(name))

    def total(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels`` (0 when none)."""
        return math.fsum(s.value for s in self._matching(name, labels))

    def by(self, name: str, *keys: str, **labels: str) -> dict[tuple[str, ...], float]:
        """Sums of ``name`` (samples matching ``labels``) grouped by the values of the labels ``keys``."""
        out: dict[tuple[str, ...], float] = defaultdict(float)
        for sample in self._matching(name, labels):
            out[tuple(sample.labels.get(key, "") for key in keys)] += sample.value
        return dict(out)

    def buckets(self, histogram: str, **labels: str) -> list[tuple[float, float]]:
        """The cumulative buckets of ``histogram`` (its base name) over the samples matching ``labels``,
        summed per bound, ascending (``+Inf`` last)."""
        sums: dict[float, float] = defaultdict(float)
        for sample in self._matching(f"{histogram}_bucket", labels):
            sums[float(sample.labels.get("le", "+Inf"))] += sample.value
        return sorted(sums.items())


def increase(before: float | None, after: float) -> float:
    """How much a counter grew from ``before`` to ``after``; a drop means the process restarted (its
    counter began again at zero), so all of ``after`` is new. Without ``before`` nothing is known: 0."""
    if before is None:
        return 0.0
    return after if after < before else after - before


def bucket_increase(before: Buckets | None, after: Buckets) -> list[tuple[float, float]]:
    """The buckets of the observations made between two scrapes (all of ``after`` after a restart, when
    any bucket dropped; nothing without ``before``)."""
    if before is None:
        return [(bound, 0.0) for bound, _ in after]
    earlier = dict(before)
    if any(count < earlier.get(bound, 0.0) for bound, count in after):
        return list(after)
    return [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]


def quantile(q: float, buckets: Buckets) -> float | None:
    """The ``q`` quantile (0..1) of a histogram's cumulative buckets, as Prometheus's
    ``histogram_quantile``: linear between the bounds of the bucket holding the rank (from 0 for the
    first); in the ``+Inf`` bucket, the largest finite bound. None without observations."""
    if not buckets or not 0.0 <= q <= 1.0:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > lower_count:
            if math.isinf(bound):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = (bound if not math.isinf(bound) else lower_bound), count
    return lower_bound
