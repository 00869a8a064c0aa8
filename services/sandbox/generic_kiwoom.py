"""Kiwoom catalog api-ids without a dedicated simulation: required fields, paging and orders.

``serve(call, spec)`` answers an authenticated call routed to a catalog entry (endpoints.py):

- every field of the entry's ``required`` (``required_body_fields``) must be in the body as a string: a
  missing one answers ``return_code 2`` + ``[1511:필수 입력 값에 값이 존재하지 않습니다(<name>)]``, a
  non-string one ``[1517:...]``; an empty string counts as present, as the hub's own check counts it;
- reads answer ``return_code 0`` with top-level fields and, for list answers, one Kiwoom-style named list
  (shapes.py, values from fake_data.py, stable for the same request). Every list pages: ``generic_rows``
  rows in pages of ``generic_rows_per_page``, response headers ``cont-yn: Y`` and an opaque ``next-key``
  bound to the api-id and body (kiwoom_envelope), sent back as request headers for the next page;
- orders (kind ``order_write``: modifications, cancellations, credit and gold orders besides the
  dedicated kt10000/kt10001) answer a fresh ``ord_no`` and go to the order ledger; with the
  order-timeout fault an accepted order's connection is cut after the delay, as for kt10000.
"""

from __future__ import annotations

from hubclient.catalog import TrSpec
from services.sandbox.fake_data import Basis, Style
from services.sandbox.generic import Page, fill, has_rows, order_side, request_basis
from services.sandbox.kiwoom_envelope import KiwoomCall, decode_next_key, encode_next_key, error, ok
from services.sandbox.shapes import kiwoom_parts
from services.sandbox.state import Order
from services.sandbox.wire import Reply


def _order(call: KiwoomCall, spec: TrSpec, basis: Basis) -> Reply:
    state, env_id, body = call.state, call.env.env_id, call.body
    order_no = f"{state.next_order_no(env_id):07d}"
    timed_out = state.faults.order_times_out(env_id)
    quantity = str(body.get("ord_qty") or body.get("mdfy_qty") or body.get("cncl_qty") or "0")
    price = str(body.get("ord_uv") or body.get("mdfy_uv") or "0")
    state.record_order(
        Order(
            env_id=env_id,
            appkey=call.appkey,
            order_no=order_no,
            tr_id=call.api_id,
            symbol=basis.code or str(body.get("stk_cd", "")),
            side=order_side(spec.name_ko),
            quantity=int(quantity) if quantity.isdigit() else 0,
            price=int(price) if price.isdigit() else 0,
            accepted_at=call.now,
            timed_out=timed_out,
        )
    )
    if timed_out:
        delay_s = state.faults.settings.order_timeout_delay_ms / 1000.0
        return Reply(504, {}, "timeout", drop=True, delay_s=delay_s)
    out = {"ord_no": order_no, "dmst_stex_tp": str(body.get("dmst_stex_tp", "KRX"))}
    if "orig_ord_no" in body:
        out["base_orig_ord_no"] = str(body["orig_ord_no"])
    return ok(call.api_id, out)


def serve(call: KiwoomCall, spec: TrSpec) -> Reply:
    """Answer ``call`` for catalog entry ``spec`` (authenticated and routed)."""
    body = call.body
    for name in spec.required:
        if body.get(name) is None:
            return error(1511, call.api_id, extra=name)
        if not isinstance(body[name], str):
            return error(1517, call.api_id, extra=name)
    basis = request_basis(
        body, Style.KIWOOM, call.state.market, call.now.date(), (spec.key, call.env.name), call.appkey
    )
    if spec.kind == "order_write":
        return _order(call, spec, basis)
    parts = kiwoom_parts(spec)
    settings = call.state.settings
    size = settings.generic_rows_per_page
    if not has_rows(parts):
        return ok(call.api_id, fill(parts, basis, Page(0, 0)))
    binding = (spec.key, f"{basis.seed:016x}")
    offset = 0
    if call.continuing:
        position = decode_next_key(call.headers.get("next-key", ""), binding)
        if position is None:
            return error(1517, call.api_id, extra="next-key")
        offset = position[1]
    total = settings.generic_rows
    count = max(0, min(size, total - offset))
    more = offset + count < total
    next_key = encode_next_key(basis.day, offset + count, binding) if more else None
    return ok(call.api_id, fill(parts, basis, Page(offset, count)), next_key)
