"""``hubclient.paging.paginate`` over the in-memory transport: following continuations, bounds, errors."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest

from hubclient import HubClient, HubTimeout, InvalidRequest, PagingLimit, UpstreamError, paginate
from hubclient.models import ApiRequest, ApiResponse, Priority, Status
from hubclient.testing import InMemoryTransport, failed, ok

PARAMS = {"stk_cd": "005930", "tic_scope": "1", "upd_stkpc_tp": "0"}


def cont(n: int) -> dict[str, str]:
    """The continuation a page offers to reach page ``n`` (1-based)."""
    return {"cont-yn": "Y", "next-key": f"key-{n}"}


def scripted(
    pages: list[tuple[Any, dict[str, str] | None] | Status], delay_s: float = 0.0
) -> Callable[[ApiRequest], Any]:
    """A responder answering the n-th request with the n-th (data, continuation) or failing status."""
    count = 0

    async def answer(request: ApiRequest) -> ApiResponse:
        nonlocal count
        step = pages[min(count, len(pages) - 1)]
        count += 1
        await asyncio.sleep(delay_s)
        if isinstance(step, Status):
            return failed(request, step, "business_error", provider_code="1517")
        data, continuation = step
        return ok(request, data, continuation=continuation)

    return answer


async def collect(hub: HubClient, **bounds: Any) -> list[ApiResponse]:
    """Every page of a ka10080 walk, as a list."""
    return [page async for page in paginate(hub, "KIWOOM", "ka10080", PARAMS, **bounds)]


async def test_follows_continuations_until_a_page_has_none() -> None:
    """Pages come in order, each request after the first carries the previous page's continuation."""
    transport = InMemoryTransport(scripted([({"p": 1}, cont(2)), ({"p": 2}, cont(3)), ({"p": 3}, None)]))
    async with HubClient(transport, caller="unit") as hub:
        pages = await collect(hub, timeout=1, priority="bulk")
    assert [page.data for page in pages] == [{"p": 1}, {"p": 2}, {"p": 3}]
    assert [r.continuation for r in transport.sent] == [None, cont(2), cont(3)]
    assert all(r.params == PARAMS and r.tr_id == "ka10080" for r in transport.sent)
    assert {r.priority for r in transport.sent} == {Priority.BULK}


async def test_single_page_sends_one_request() -> None:
    """A first page without a continuation ends the walk after exactly one request."""
    transport = InMemoryTransport(scripted([({"only": True}, None)]))
    async with HubClient(transport, caller="unit") as hub:
        pages = await collect(hub, timeout=1)
    assert [page.data for page in pages] == [{"only": True}] and len(transport.sent) == 1


async def test_max_pages_raises_paging_limit_with_the_resume_point() -> None:
    """With pages left after max_pages, PagingLimit says how many came and where to resume; no extra send."""
    endless = [({"p": n}, cont(n + 1)) for n in range(1, 10)]
    transport = InMemoryTransport(scripted(list(endless)))
    seen: list[Any] = []
    async with HubClient(transport, caller="unit") as hub:
        with pytest.raises(PagingLimit) as info:
            async for page in paginate(hub, "KIWOOM", "ka10080", PARAMS, timeout=1, max_pages=3):
                seen.append(page.data)
    assert seen == [{"p": 1}, {"p": 2}, {"p": 3}] and len(transport.sent) == 3
    assert (info.value.limit, info.value.pages, info.value.continuation) == ("max_pages", 3, cont(4))
    assert info.value.response is not None and info.value.response.data == {"p": 3}
    assert not info.value.retriable


async def test_last_page_exactly_at_max_pages_is_not_an_error() -> None:
    """A walk whose last page is the max_pages-th ends normally."""
    transport = InMemoryTransport(scripted([({"p": 1}, cont(2)), ({"p": 2}, None)]))
    async with HubClient(transport, caller="unit") as hub:
        pages = await collect(hub, timeout=1, max_pages=2)
    assert len(pages) == 2


async def test_max_s_bounds_the_whole_walk_including_a_slow_page() -> None:
    """A page that would run past max_s is cut at max_s and reported as PagingLimit, not HubTimeout."""
    endless = [({"p": n}, cont(n + 1)) for n in range(1, 10)]
    # Two pages of 0.3 s fit in 0.85 s with 0.25 s to spare for a loaded host and the coverage tracer (a
    # late wake-up only makes them later); the third cannot end before 0.9 s, however fast the host.
    transport = InMemoryTransport(scripted(list(endless), delay_s=0.3))
    loop = asyncio.get_running_loop()
    async with HubClient(transport, caller="unit") as hub:
        started = loop.time()
        with pytest.raises(PagingLimit) as info:
            await collect(hub, timeout=5, max_s=0.85)
        took = loop.time() - started
    assert (info.value.limit, info.value.pages, info.value.continuation) == ("max_s", 2, cont(3))
    assert isinstance(info.value.__cause__, HubTimeout)
    # Cut at max_s, not at the page's own 5 s timeout.
    assert 0.85 <= took < 5 and 0.85 <= info.value.elapsed_s < 5


async def test_a_page_timing_out_on_its_own_timeout_is_hub_timeout() -> None:
    """When the page's own timeout (not max_s) expires, the HubTimeout is raised unchanged."""
    transport = InMemoryTransport(scripted([({"p": 1}, cont(2))], delay_s=0.2))
    async with HubClient(transport, caller="unit") as hub:
        with pytest.raises(HubTimeout):
            await collect(hub, timeout=0.05, max_s=10)


async def test_error_midway_is_raised_after_the_earlier_pages() -> None:
    """A failing second page raises its typed error after the first page was yielded; nothing more is sent."""
    transport = InMemoryTransport(scripted([({"p": 1}, cont(2)), Status.UPSTREAM_ERROR, ({"p": 3}, None)]))
    seen: list[ApiResponse] = []
    async with HubClient(transport, caller="unit") as hub:
        with pytest.raises(UpstreamError) as info:
            async for page in paginate(hub, "KIWOOM", "ka10080", PARAMS, timeout=1):
                seen.append(page)
    assert [page.data for page in seen] == [{"p": 1}] and len(transport.sent) == 2
    assert info.value.provider_code == "1517"
    assert seen[-1].continuation == cont(2), "the last good page says where to resume"


@pytest.mark.parametrize(
    "bounds",
    [{"max_pages": 0}, {"max_s": 0}, {"max_pages": math.nan}, {"max_s": math.nan}, {"max_s": math.inf}],
)
async def test_bounds_that_bound_nothing_are_refused_before_sending(bounds: dict[str, Any]) -> None:
    """A zero page count or total time is an InvalidRequest and nothing is sent; so is NaN (every comparison
    with it is false, so it passed the checks and bounded nothing: a never-ending walk went on for good)
    and an infinite total time."""
    transport = InMemoryTransport(scripted([({"p": 1}, None)]))
    async with HubClient(transport, caller="unit") as hub:
        with pytest.raises(InvalidRequest):
            await collect(hub, timeout=1, **bounds)
    assert transport.sent == []
