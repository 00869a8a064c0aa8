"""What a generic answer holds: its parts (objects and lists) and their field names, chosen per endpoint.

The endpoint tables carry request fields only, so the answers of the endpoints without a dedicated
simulation are built from families of the brokers' own response vocabulary, picked by the endpoint's kind,
category and words of its Korean name, function and path (first match of a table wins):

- KIS quotes: a chart (``chartprice``, 분봉, 차트, 기간별) is ``output1`` (the quote) + ``output2`` (rows);
  a list (순위, 일별, 추이, 체결, ...) is ``output`` rows; anything else one ``output`` object. Field prefixes
  follow the category (``stck_``, ``futs_``, ``bond_``, ``elw_``; overseas ``last``/``diff``/``rate``).
- KIS accounts: "orderable" (가능, ``psbl``) is one ``output`` object; the rest ``output1`` rows
  (holdings, executions or entries) + ``output2`` (one summary row). KIS orders: ``output`` with
  ``KRX_FWDG_ORD_ORGNO``, ``ODNO``, ``ORD_TMD``.
- Kiwoom: orders answer ``ord_no`` (and ``base_orig_ord_no`` for a modification or cancellation); single
  facts (기본정보, 호가, 예수금, 가능, ...) are top-level fields; everything else top-level fields plus one
  list whose name is built Kiwoom-style from the words of the Korean name (``tdy_trde_qty_upper``).

The list of a part marked ``paged`` is the one a paging endpoint spreads over pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hubclient.catalog import TrSpec


class Layout(StrEnum):
    """How a part is sent: one object, a list of rows, or a list holding one summary object."""

    OBJECT = "object"
    ROWS = "rows"
    SUMMARY = "summary"


@dataclass(frozen=True, slots=True)
class Part:
    """One part of an answer; ``key`` "" puts an object's fields at the top level (Kiwoom)."""

    key: str
    layout: Layout
    fields: tuple[str, ...]
    varied: bool = False  # rows show different symbols even when the request names one (rankings)

    @property
    def paged(self) -> bool:
        """True for the list that pages."""
        return self.layout is Layout.ROWS


def _has(spec: TrSpec, *words: str) -> bool:
    text = f"{spec.name_ko} {spec.function} {spec.path} {spec.name}".lower()
    return any(word in text for word in words)


# -- KIS --------------------------------------------------------------------------------------------
_KIS_PREFIX = {
    "domestic_futureoption": "futs",
    "domestic_bond": "bond",
    "elw": "elw",
}
_OVERSEAS_QUOTE = (
    "rsym",
    "symb",
    "name",
    "last",
    "open",
    "high",
    "low",
    "sign",
    "diff",
    "rate",
    "tvol",
    "tamt",
)
_OVERSEAS_ROW = ("xymd", "khms", "clos", "open", "high", "low", "sign", "diff", "rate", "tvol", "tamt")
_OVERSEAS_FUT = ("srs_cd", "last_price", "open_price", "high_price", "low_price", "prev_diff_rate", "vol")
_CHART_WORDS = ("chartprice", "chart", "분봉", "차트", "기간별")
_LIST_WORDS = (
    "순위",
    "상위",
    "일별",
    "일자별",
    "추이",
    "체결",
    "시간별",
    "list",
    "search",
    "목록",
    "리스트",
    "종목",
)


def _kis_quote_fields(spec: TrSpec) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(object fields, time-series row fields, ranking row fields) of a KIS quote in its category."""
    if spec.category == "overseas_stock":
        return _OVERSEAS_QUOTE, _OVERSEAS_ROW, ("rank", *_OVERSEAS_QUOTE)
    if spec.category == "overseas_futureoption":
        return _OVERSEAS_FUT, ("data_date", "data_time", *_OVERSEAS_FUT[1:]), _OVERSEAS_FUT
    p = _KIS_PREFIX.get(spec.category, "stck")
    move = ("prdy_vrss", "prdy_vrss_sign", "prdy_ctrt", "acml_vol", "acml_tr_pbmn")
    quote = (f"{p}_shrn_iscd", "hts_kor_isnm", f"{p}_prpr", *move, f"{p}_oprc", f"{p}_hgpr", f"{p}_lwpr")
    extra = ("nav", "nav_prdy_vrss") if spec.category == "etfetn" else (f"{p}_mxpr", f"{p}_llam")
    series = (f"{p}_bsop_date", f"{p}_clpr", f"{p}_oprc", f"{p}_hgpr", f"{p}_lwpr", *move)
    ranking = ("data_rank", "mksc_shrn_iscd", "hts_kor_isnm", f"{p}_prpr", *move)
    return (*quote, *extra), series, ranking


def _kis_quote(spec: TrSpec) -> tuple[Part, ...]:
    quote, series, ranking = _kis_quote_fields(spec)
    if _has(spec, *_CHART_WORDS):
        return Part("output1", Layout.OBJECT, quote), Part("output2", Layout.ROWS, series)
    if _has(spec, "순위", "상위", "rank"):
        return (Part("output", Layout.ROWS, ranking, varied=True),)
    if _has(spec, *_LIST_WORDS) or spec.paging_keys:
        return (Part("output", Layout.ROWS, series),)
    return (Part("output", Layout.OBJECT, quote),)


_HOLDINGS = ("pdno", "prdt_name", "hldg_qty", "ord_psbl_qty", "pchs_avg_pric", "pchs_amt", "prpr", "evlu_amt")
_EXECUTIONS = ("ord_dt", "odno", "orgn_odno", "sll_buy_dvsn_cd", "pdno", "prdt_name", "ord_qty", "ord_unpr")
_OVERSEAS_HOLDINGS = ("ovrs_pdno", "ovrs_item_name", "ovrs_cblc_qty", "frcr_pchs_amt1", "now_pric2")
_SUMMARY = ("dnca_tot_amt", "tot_evlu_amt", "nass_amt", "pchs_amt_smtl_amt", "evlu_amt_smtl_amt")
_ORDERABLE = (
    "ord_psbl_cash",
    "nrcvb_buy_amt",
    "nrcvb_buy_qty",
    "max_buy_amt",
    "max_buy_qty",
    "psbl_qty_calc_unpr",
)


def _kis_account(spec: TrSpec) -> tuple[Part, ...]:
    if _has(spec, "가능", "psbl") and not spec.paging_keys:  # a paged one lists orders, below
        return (Part("output", Layout.OBJECT, _ORDERABLE),)
    rows: tuple[str, ...]
    if _has(spec, "체결", "주문", "ccld", "ccnl", "내역", "ord"):
        rows = (*_EXECUTIONS, "ord_tmd", "tot_ccld_qty", "avg_prvs", "tot_ccld_amt", "rmn_qty")
    elif spec.category.startswith("overseas"):
        rows = (*_OVERSEAS_HOLDINGS, "ovrs_stck_evlu_amt", "frcr_evlu_pfls_amt", "evlu_pfls_rt", "tr_crcy_cd")
    else:
        rows = (*_HOLDINGS, "evlu_pfls_amt", "evlu_pfls_rt")
    return Part("output1", Layout.ROWS, rows), Part(
        "output2", Layout.SUMMARY, (*_SUMMARY, "evlu_pfls_smtl_amt")
    )


def kis_parts(spec: TrSpec) -> tuple[Part, ...]:
    """The parts of a KIS answer for ``spec``."""
    if spec.kind == "order":
        return (Part("output", Layout.OBJECT, ("KRX_FWDG_ORD_ORGNO", "ODNO", "ORD_TMD")),)
    if spec.kind == "account":
        return _kis_account(spec)
    return _kis_quote(spec)


# -- Kiwoom -----------------------------------------------------------------------------------------
# Korean word -> Kiwoom-style abbreviation, for list names; longer words first where they overlap.
_TOKENS = (
    ("금현물", "gold"),
    ("업종", "inds"),
    ("테마", "thema"),
    ("프로그램", "prm"),
    ("외국인", "frgnr"),
    ("외인", "frgnr"),
    ("기관", "orgn"),
    ("투자자", "invsr"),
    ("거래원", "trde_ori"),
    ("증권사", "sec"),
    ("신용", "crd"),
    ("대차", "dbrt"),
    ("공매도", "shrts"),
    ("미체결", "oso"),
    ("체결", "cntr"),
    ("잔고", "bal"),
    ("실현손익", "rlzt_pl"),
    ("수익률", "prft_rt"),
    ("예탁자산", "dpst_aset"),
    ("당일", "tdy"),
    ("전일", "pred"),
    ("일별", "daly"),
    ("일자별", "dt"),
    ("시간별", "tm"),
    ("시간대별", "tm"),
    ("거래량", "trde_qty"),
    ("거래대금", "trde_prica"),
    ("등락률", "flu_rt"),
    ("등락율", "flu_rt"),
    ("호가잔량", "bid_req"),
    ("틱", "tic"),
    ("분봉", "min_pole"),
    ("일봉", "dt_pole"),
    ("주봉", "wk_pole"),
    ("월봉", "mth_pole"),
    ("년봉", "yr_pole"),
    ("추이", "trnsn"),
    ("상위", "upper"),
    ("순위", "rank"),
    ("차트", "chart"),
    ("주문", "ord"),
    ("내역", "dtl"),
    ("ETF", "etf"),
    ("ELW", "elw"),
)
_SINGLE_WORDS = (
    "기본정보",
    "정보조회",
    "상세정보",
    "시세정보",
    "현재가요청",
    "호가",
    "예수금",
    "가능",
    "예상체결",
)
_LIST_HINTS = (
    "리스트",
    "상위",
    "순위",
    "급증",
    "일별",
    "일자별",
    "추이",
    "차트",
    "목록",
    "내역",
    "별",
    "종목요청",
)

_K_QUOTE = ("stk_cd", "stk_nm", "cur_prc", "pred_pre_sig", "pred_pre", "flu_rt", "trde_qty", "trde_prica")
_K_FAMILIES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (
        ("봉", "차트"),
        ("dt", "cntr_tm", "cur_prc", "trde_qty", "open_pric", "high_pric", "low_pric", "pred_pre"),
    ),
    (("상위", "순위"), ("rank", *_K_QUOTE)),
    (("업종",), ("inds_cd", "inds_nm", "cur_prc", "pred_pre_sig", "pred_pre", "flu_rt", "trde_qty")),
    (
        ("미체결", "체결", "주문", "매매일지"),
        ("ord_no", "stk_cd", "stk_nm", "ord_qty", "ord_pric", "cntr_qty"),
    ),
    (
        ("잔고", "평가", "수익률"),
        ("stk_cd", "stk_nm", "rmnd_qty", "pur_pric", "cur_prc", "evlt_amt", "prft_rt"),
    ),
    (("손익",), ("dt", "stk_cd", "stk_nm", "cntr_qty", "buy_uv", "cntr_pric", "tdy_sel_pl", "pl_rt")),
    (
        ("투자자", "기관", "외국인", "외인", "프로그램", "거래원"),
        ("dt", "stk_cd", "stk_nm", "netprps_qty", "netprps_amt"),
    ),
    (("일별", "추이", "시간", "일자"), ("dt", "cur_prc", "pred_pre_sig", "pred_pre", "flu_rt", "trde_qty")),
)
_K_ACCOUNT_HEAD = ("entr", "d2_entra", "tot_pur_amt", "tot_evlt_amt", "tot_evlt_pl", "tot_prft_rt")
_K_INFO = (*_K_QUOTE, "open_pric", "high_pric", "low_pric", "upl_pric", "lst_pric", "base_pric", "mac", "per")
_K_BIDS = ("bid_req_base_tm", "sel_fpr_bid", "sel_fpr_req", "buy_fpr_bid", "buy_fpr_req", "tot_sel_req")
_K_SECTOR = (
    "inds_nm",
    "cur_prc",
    "pred_pre_sig",
    "pred_pre",
    "flu_rt",
    "trde_qty",
    "trde_prica",
    "open_pric",
)
_K_CASH = ("entr", "d2_entra", "ord_alow_amt", "pymn_alow_amt", "ord_psbl_qty", "repl_amt")


def kiwoom_list_name(spec: TrSpec) -> str:
    """A Kiwoom-style name for the list of ``spec``'s answer, from the words of its Korean name."""
    name = spec.name_ko
    found: list[tuple[int, str]] = []
    for word, token in _TOKENS:
        at = name.find(word)
        if at >= 0 and token not in (t for _, t in found):
            found.append((at, token))
            name = name.replace(word, " " * len(word))
    tokens = [token for _, token in sorted(found)] or ["stk"]
    if not any(t.startswith(("stk", "inds", "gold", "thema", "etf", "elw")) for t in tokens):
        tokens.insert(0, "stk")
    return "_".join(tokens)


def kiwoom_parts(spec: TrSpec) -> tuple[Part, ...]:
    """The parts of a Kiwoom answer for ``spec``."""
    if spec.kind == "order_write":
        if "정정" in spec.name_ko or "취소" in spec.name_ko:
            return (Part("", Layout.OBJECT, ("ord_no", "base_orig_ord_no", "dmst_stex_tp")),)
        return (Part("", Layout.OBJECT, ("ord_no", "dmst_stex_tp")),)
    name = spec.name_ko
    if any(word in name for word in _SINGLE_WORDS) and not any(word in name for word in _LIST_HINTS):
        if "호가" in name:
            return (Part("", Layout.OBJECT, _K_BIDS),)
        if "업종" in name:
            return (Part("", Layout.OBJECT, _K_SECTOR),)
        if spec.kind == "account_read" or "예수금" in name or "가능" in name:
            return (Part("", Layout.OBJECT, _K_CASH),)
        return (Part("", Layout.OBJECT, _K_INFO),)
    rows = next((fields for words, fields in _K_FAMILIES if any(w in name for w in words)), _K_QUOTE)
    varied = "rank" in rows or "inds_cd" in rows
    head = (
        _K_ACCOUNT_HEAD if spec.kind == "account_read" else ("stk_cd",) if "stk_cd" in spec.required else ()
    )
    return Part("", Layout.OBJECT, head), Part(kiwoom_list_name(spec), Layout.ROWS, rows, varied)
