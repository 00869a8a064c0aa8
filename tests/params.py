"""Request params the tests and benchmarks send, written once.

Identical reads in flight together share one upstream call (``services/gateway/sharing.py``), so a load
meant to exercise pacing sends ``distinct_price()``: a price read for a symbol no other request of the
process asked for (the sandbox answers any six-digit code).
"""

from __future__ import annotations

import itertools

PRICE = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
_SYMBOLS = itertools.count()


def distinct_price() -> dict[str, str]:
    """Price params for a symbol no earlier call of this process used (up to 900,000 of them)."""
    return {**PRICE, "FID_INPUT_ISCD": f"{100_000 + next(_SYMBOLS) % 900_000:06d}"}
