"""KIS catalog endpoints without a dedicated simulation: the envelope, required fields, paging and orders.

``serve(call, spec)`` answers an authenticated call routed to a catalog entry (endpoints.py):

- every name of the entry's ``required`` must be present (GET query case-insensitively, POST body keys
  as published, values as strings); a missing one answers HTTP 200 ``rt_cd "2"`` ``OPSQ2001`` "ERROR :
  INPUT_FIELD_NAME <name>" (kis_envelope.input_error). The paging context keys (``CTX_AREA_*``) are only
  demanded on a continuation, as the hub demands them;
- quotes answer ``MCA00000``, account reads ``KIOK0510``/``KIOK0460``; the parts come from shapes.py and
  the values from fake_data.py, stable for the same request;
- an entry whose paging names context keys (``CTX_AREA_FK100``/``NK100``, ``..200``, ...) pages:
  ``generic_rows`` rows in pages of ``generic_rows_per_page``, response header ``tr_cont`` F (first of
  several), M (middle), E (last), D (the only page); the body carries the keys lower-cased, space-padded
  to their published width (100 when unnumbered), and the next page is asked for with header
  ``tr_cont: N`` and both keys sent back. A key that does not belong to the request is ``OPSQ2001`` on it.
  An entry that pages by ``tr_cont`` alone has no context to continue from and answers one page (D);
- orders (kind ``order``) need the ``custtype`` header (``EGW00208``) and a ``hashkey`` header, when sent,
  matching ``/uapi/hashkey`` (``EGW00131``); they answer ``APBK0013`` with a fresh ``ODNO`` and go to the
  order ledger (``GET /_sandbox/orders``); with the order-timeout fault an accepted order is answered,
  after the delay, with HTTP 500 ``EGW00301``.
"""

from __future__ import annotations

import re
from typing import Any

from hubclient.catalog import TrSpec
from services.sandbox.fake_data import Basis, Style
from services.sandbox.generic import Page, fill, has_rows, order_side, request_basis
from services.sandbox.kis_envelope import KisCall, error, hash_of, input_error, ok
from services.sandbox.shapes import kis_parts
from services.sandbox.state import Order
from services.sandbox.wire import Reply

DEFAULT_CTX_WIDTH = 100


def _params(call: KisCall, spec: TrSpec) -> dict[str, Any]:
    return call.query if spec.method == "GET" else dict(call.body or {})


def _missing(spec: TrSpec, params: dict[str, Any], continuing: bool) -> str | None:
    """The first required name absent from ``params`` (or not a string in a POST body), or None."""
    for name in spec.required:
        if name.upper().startswith("CTX_AREA_") and not continuing:
            continue
        raw = params.get(name.upper() if spec.method == "GET" else name)
        if raw is None or (spec.method == "POST" and not isinstance(raw, str)):
            return name
    return None


def ctx_width(key: str) -> int:
    """Published width of a context key: ``CTX_AREA_NK200`` -> 200, unnumbered -> 100."""
    digits = re.search(r"(\d+)$", key)
    return int(digits.group(1)) if digits else DEFAULT_CTX_WIDTH


def _ctx_names(spec: TrSpec) -> tuple[str, str] | None:
    fk = next((k for k in spec.paging_keys if "_FK" in k.upper()), None)
    nk = next((k for k in spec.paging_keys if "_NK" in k.upper()), None)
    return (fk, nk) if fk and nk else None


def _binding(basis: Basis) -> str:
    return f"{basis.seed % 16**8:08x}"


def _tr_cont(offset: int, more: bool) -> str:
    if more:
        return "F" if offset == 0 else "M"
    return "D" if offset == 0 else "E"


def _order(call: KisCall, spec: TrSpec, basis: Basis, params: dict[str, Any]) -> Reply:
    state, env_id = call.state, call.env.env_id
    order_no = f"{state.next_order_no(env_id):010d}"
    timed_out = state.faults.order_times_out(env_id)
    quantity = str(next((params[k] for k in params if k.endswith("_QTY")), "0"))
    price = str(next((params[k] for k in params if k.endswith(("_UNPR", "_PRIC"))), "0"))
    state.record_order(
        Order(
            env_id=env_id,
            appkey=call.appkey,
            order_no=order_no,
            tr_id=call.tr_id,
            symbol=basis.code,
            side=order_side(spec.name_ko),
            quantity=int(quantity) if quantity.isdigit() else 0,
            price=int(price) if price.isdigit() else 0,
            accepted_at=call.now,
            timed_out=timed_out,
        )
    )
    if timed_out:
        reply = error(500, "EGW00301", call.tr_id)
        reply.delay_s = state.faults.settings.order_timeout_delay_ms / 1000.0
        return reply
    output = {"KRX_FWDG_ORD_ORGNO": "91252", "ODNO": order_no, "ORD_TMD": call.now.strftime("%H%M%S")}
    return ok(call.tr_id, msg_cd="APBK0013", output=output)


def serve(call: KisCall, spec: TrSpec) -> Reply:
    """Answer ``call`` for catalog entry ``spec`` (authenticated, routed, method checked)."""
    if spec.method == "POST" and call.body is None:
        return error(500, "EGW00101", call.tr_id)
    params = _params(call, spec)
    ctx = _ctx_names(spec)
    continuing = call.headers.get("tr_cont", "").strip() == "N"
    missing = _missing(spec, params, continuing and ctx is not None)
    if missing is not None:
        return input_error(call.tr_id, missing)
    style = Style.KIS_OVERSEAS if spec.category.startswith("overseas") else Style.KIS
    basis = request_basis(
        params, style, call.state.market, call.now.date(), (spec.key, call.env.name), call.appkey
    )
    if spec.kind == "order":
        if call.headers.get("custtype") is None:
            return error(500, "EGW00208", call.tr_id)
        sent_hash = call.headers.get("hashkey")
        if sent_hash is not None and call.body is not None and sent_hash != hash_of(call.body):
            return error(500, "EGW00131", call.tr_id)
        return _order(call, spec, basis, params)
    parts = kis_parts(spec)
    settings = call.state.settings
    size = settings.generic_rows_per_page
    if ctx is None or not has_rows(parts):
        msg_cd = "MCA00000" if spec.kind == "quote" else "KIOK0510"
        return ok(call.tr_id, msg_cd=msg_cd, **fill(parts, basis, Page(0, size)))
    fk_name, nk_name = ctx
    binding = _binding(basis)
    offset = 0
    if continuing:
        sent = str(params.get(nk_name.upper() if spec.method == "GET" else nk_name, "")).strip()
        position = sent.split("^")
        if len(position) != 3 or position[0] != binding or not position[1].isdigit():
            return input_error(call.tr_id, nk_name)
        offset = int(position[1])
    total = settings.generic_rows
    count = max(0, min(size, total - offset))
    more = offset + count < total
    fk = f"{basis.account}^{binding}^N^".ljust(ctx_width(fk_name))
    nk = f"{binding}^{offset + count:05d}^" if more else ""
    outputs = fill(parts, basis, Page(offset, count))
    outputs[fk_name.lower()] = fk
    outputs[nk_name.lower()] = nk.ljust(ctx_width(nk_name))
    msg_cd = "KIOK0510" if more else "KIOK0460"
    return ok(call.tr_id, msg_cd=msg_cd, tr_cont=_tr_cont(offset, more), **outputs)
