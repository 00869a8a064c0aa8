"""Building ``catalog.json`` from the brokers' endpoint tables (``apihub catalog generate``).

The tables (``kis-endpoints.tsv``, ``kiwoom-endpoints.tsv``, described in ``ENDPOINTS.md`` beside them) are
facts taken from the brokers' published samples; this module maps each REST row to a catalog entry with
pure functions (kind -> idempotent and limit class, mock column -> mock tr_id, paging column -> paging
kind), lays the hand-written facts of ``OVERRIDES`` on top, and writes the file deterministically: entries
sorted by provider and key, one entry a line, a header naming each source file and its sha256. Nothing here
runs when a worker imports ``hubclient``: the client reads only the generated file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

#: The generated file, read by ``hubclient.catalog``.
CATALOG_FILE = Path(__file__).with_name("catalog.json")
#: Where the tables live in this checkout: ``../shared/reference`` beside the repository.
DEFAULT_SOURCE = Path(__file__).resolve().parents[3] / "shared" / "reference"
KIS_TABLE = "kis-endpoints.tsv"
KIWOOM_TABLE = "kiwoom-endpoints.tsv"

#: KIS kinds that are not a worker's REST call (token issue/revoke, WebSocket approval).
_KIS_SKIPPED_KINDS = frozenset({"auth"})
#: Kiwoom kinds that are not a worker's REST call: tokens and WebSocket real-time types.
_KIWOOM_SKIPPED_KINDS = frozenset({"auth_write", "stream"})
#: Kiwoom's overseas api-ids, published but not live yet.
_KIWOOM_PLANNED_PREFIXES = ("usa", "ust")
#: KIS samples' rule for a mock tr_id nobody published: a leading T, J or C becomes V.
_KIS_MOCK_PREFIXES = frozenset("TJC")
_MAX_KEY_LENGTH = 32  # ApiRequest.tr_id's pattern

#: Hand-written facts that the tables do not carry, kept true on top of the generated rows.
OVERRIDES: Mapping[tuple[str, str], Mapping[str, Any]] = {
    # KIS charts page by moving their time/date cursor back, not by tr_cont.
    ("KIS", "FHKST03010100"): {"paging": "kis_time_cursor"},
    ("KIS", "FHKST03010200"): {"paging": "kis_time_cursor"},
    # Past-day minutes exist only on the real server (the mock answers MCA00124).
    ("KIS", "FHKST03010230"): {"paging": "kis_time_cursor", "mock": "no"},
    ("KIWOOM", "ka10079"): {"name": "tick-chart"},
    ("KIWOOM", "ka10080"): {"name": "minute-chart"},
    ("KIWOOM", "ka10081"): {"name": "daily-chart"},
    ("KIWOOM", "ka10082"): {"name": "weekly-chart"},
    ("KIWOOM", "ka10083"): {"name": "monthly-chart"},
    ("KIWOOM", "kt10000"): {"name": "order-buy"},
    ("KIWOOM", "kt10001"): {"name": "order-sell"},
}


def _names(cell: str) -> tuple[str, ...]:
    """A ``;``-joined list of names; ``-`` or empty is none."""
    return tuple(name for name in cell.split(";") if name and name != "-")


def kis_limit_class(kind: str) -> str:
    """KIS counts account and order calls also against its ledger limit (``EGW00215``)."""
    return "query" if kind == "quote" else "ledger"


def kiwoom_limit_class(kind: str) -> str:
    """Kiwoom publishes separate limits for queries and orders; an unclassified row counts as an order."""
    return "query" if kind in ("read", "account_read") else "order"


def is_idempotent(kind: str) -> bool:
    """Orders, their modifications and cancellations (and rows nobody classified) must never be resent."""
    return kind not in ("order", "order_write", "review_required")


def kis_mock(tr_id: str, mock: str, mock_tr_id: str) -> tuple[str | None, bool]:
    """``(mock tr_id, offered on the mock server)`` from the table's ``mock`` and ``mock_tr_id`` columns."""
    if mock == "no":
        return None, False
    if mock == "yes" and mock_tr_id != "-":
        return mock_tr_id, True
    return ("V" + tr_id[1:] if tr_id[:1] in _KIS_MOCK_PREFIXES else tr_id), True


def kis_paging(cell: str) -> tuple[str, tuple[str, ...]]:
    """``(paging kind, context keys)``: a row naming ``tr_cont`` or ``CTX_AREA_*`` keys pages by tr_cont."""
    names = _names(cell)
    return ("kis_tr_cont" if names else "none"), tuple(n for n in names if n != "tr_cont")


def kis_entry(row: Mapping[str, str]) -> dict[str, Any]:
    """The catalog entry of one REST row of ``kis-endpoints.tsv``."""
    tr_id, kind, variant = row["tr_id"], row["kind"], row["variant"]
    mock_tr_id, mock_supported = kis_mock(tr_id, row["mock"], row["mock_tr_id"])
    paging, paging_keys = kis_paging(row["paging"])
    name = row["function"].replace("_", "-")
    if variant != "-":
        name += "-" + variant.partition("=")[2]
    return {
        "provider": "KIS",
        "key": tr_id,
        "tr_id": tr_id,
        "name": name,
        "name_ko": row["name"],
        "function": row["function"],
        "category": row["category"],
        "subcategory": row["subcategory"],
        "kind": kind,
        "method": row["method"],
        "path": row["path"],
        "params_in": "query" if row["method"] == "GET" else "body",
        "required": list(_names(row["params"])),
        "paging": paging,
        "paging_keys": list(paging_keys),
        "idempotent": is_idempotent(kind),
        "limit_class": kis_limit_class(kind),
        "mock": row["mock"],
        "mock_tr_id": mock_tr_id,
        "mock_supported": mock_supported,
        "planned": False,
    }


def kiwoom_entry(row: Mapping[str, str]) -> dict[str, Any]:
    """The catalog entry of one REST row of ``kiwoom-endpoints.tsv`` (every read may page by cont-yn)."""
    api_id, kind = row["api_id"], row["kind"]
    reads = kind in ("read", "account_read")
    return {
        "provider": "KIWOOM",
        "key": api_id,
        "tr_id": api_id,
        "name": row["name"],
        "name_ko": row["name"],
        "function": "",
        "category": row["major_category"],
        "subcategory": row["subcategory"],
        "kind": kind,
        "method": row["method"],
        "path": row["path"],
        "params_in": "query" if row["method"] == "GET" else "body",
        "required": list(_names(row["required_body_fields"])),
        "paging": "kiwoom_cont" if reads else "none",
        "paging_keys": [],
        "idempotent": is_idempotent(kind),
        "limit_class": kiwoom_limit_class(kind),
        "mock": "undeclared",  # the table has no mock column; Kiwoom's mock server takes the same api-id
        "mock_tr_id": api_id,
        "mock_supported": True,
        "planned": api_id.startswith(_KIWOOM_PLANNED_PREFIXES),
    }


def apply_override(entry: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``entry`` with the hand-written facts laid on top (``mock: no`` also drops the mock tr_id)."""
    merged = {**entry, **override, "overridden": sorted(override)}
    if override.get("mock") == "no":
        merged |= {"mock_tr_id": None, "mock_supported": False}
    return merged


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text), delimiter="\t"))


def build_entries(kis_text: str, kiwoom_text: str) -> list[dict[str, Any]]:
    """Every REST entry of both tables, overrides applied, sorted by provider and key.

    A tr_id published for two paths (KIS HHDFO55020100) keeps its id on the first path in sort order; the
    others are keyed ``<tr_id>_<function>`` so each stays addressable, and still send the published tr_id.
    """
    entries = [kis_entry(r) for r in _rows(kis_text) if r["kind"] not in _KIS_SKIPPED_KINDS]
    entries += [kiwoom_entry(r) for r in _rows(kiwoom_text) if r["kind"] not in _KIWOOM_SKIPPED_KINDS]
    entries.sort(key=lambda e: (e["provider"], e["tr_id"], e["path"]))
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        if (entry["provider"], entry["key"]) in seen:
            entry["key"] = f"{entry['tr_id']}_{entry['function'] or entry['path'].rsplit('/', 1)[-1]}"
        if (entry["provider"], entry["key"]) in seen or len(entry["key"]) > _MAX_KEY_LENGTH:
            raise ValueError(f"cannot key {entry['provider']}/{entry['tr_id']} at {entry['path']} uniquely")
        seen.add((entry["provider"], entry["key"]))
    missing = set(OVERRIDES) - seen
    if missing:
        raise ValueError(f"overrides name entries the tables lack: {sorted(missing)}")
    merged = [apply_override(e, OVERRIDES.get((e["provider"], e["key"]), {})) for e in entries]
    return sorted(merged, key=lambda e: (e["provider"], e["key"]))


def _counts(entries: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in entries:
        label = f"{entry['provider']}{' planned' if entry['planned'] else ''}"
        counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items()))


def render(kis_bytes: bytes, kiwoom_bytes: bytes) -> str:
    """The text of ``catalog.json`` for these two tables (UTF-8, stable byte for byte)."""
    entries = build_entries(kis_bytes.decode("utf-8"), kiwoom_bytes.decode("utf-8"))
    header = {
        "generated_by": "apihub catalog generate",
        "sources": [
            {"file": name, "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in ((KIS_TABLE, kis_bytes), (KIWOOM_TABLE, kiwoom_bytes))
        ],
        "counts": _counts(entries),
    }
    lines = ["{", f' "header": {json.dumps(header, ensure_ascii=False)},', ' "entries": [']
    body = [f"  {json.dumps(entry, ensure_ascii=False)}" for entry in entries]
    lines.append(",\n".join(body))
    lines += [" ]", "}", ""]
    return "\n".join(lines)


def generate(source: Path = DEFAULT_SOURCE) -> str:
    """``render`` of the tables in ``source``; raises ``FileNotFoundError`` when one is absent."""
    return render((source / KIS_TABLE).read_bytes(), (source / KIWOOM_TABLE).read_bytes())


def write(source: Path = DEFAULT_SOURCE, target: Path = CATALOG_FILE) -> bool:
    """Regenerate ``target`` from ``source``; True when its content changed."""
    text = generate(source)
    if target.exists() and target.read_text(encoding="utf-8") == text:
        return False
    target.write_text(text, encoding="utf-8")
    return True
