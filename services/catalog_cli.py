"""``apihub catalog generate|list|show|search``: build the catalog and find an endpoint in it.

Tables are laid out by display width, so Korean names (two terminal columns a character) line up too.
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

from hubclient.catalog import TrSpec, entries, missing_params, search
from hubclient.models import Provider

#: The widest a name column gets, in terminal columns; longer names are cut with an ellipsis.
NAME_COLUMNS = 36
_PLANNED = " (planned)"


def width(text: str) -> int:
    """Terminal columns ``text`` takes: East Asian wide characters two, combining marks none."""
    total = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        total += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return total


def fit(text: str, columns: int) -> str:
    """``text`` cut to at most ``columns`` columns (ending in an ellipsis when cut) and padded to them."""
    if width(text) > columns:
        kept = ""
        for char in text:
            if width(kept + char) > columns - 1:
                break
            kept += char
        text = kept + "…"
    return text + " " * (columns - width(text))


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows laid out in columns two spaces apart; the last column is not padded."""
    if not rows:
        return []
    widths = [max(width(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(fit(c, w) for c, w in zip(row, widths, strict=False)), row[-1]]) for row in rows]


def _name(spec: TrSpec) -> str:
    name = spec.name_ko or spec.name
    if not spec.planned:
        return fit(name, NAME_COLUMNS).rstrip()
    return fit(name, NAME_COLUMNS - width(_PLANNED)).rstrip() + _PLANNED


def endpoint_lines(specs: Iterable[TrSpec]) -> list[str]:
    """One line an endpoint under a header, then a count by provider."""
    specs = list(specs)
    rows = [["provider", "id", "method", "kind", "limit", "mock", "name", "path"]]
    for s in specs:
        mock = s.mock if s.mock_supported else "no"
        rows.append([s.provider.value, s.key, s.method, s.kind, s.limit_class.value, mock, _name(s), s.path])
    if not specs:
        return ["no endpoint matches"]
    counts = ", ".join(f"{p.value} {n}" for p in Provider if (n := sum(s.provider is p for s in specs)))
    planned = sum(s.planned for s in specs)
    noun = "endpoint" if len(specs) == 1 else "endpoints"
    return [*table(rows), "", f"{len(specs)} {noun} ({counts}; {planned} planned)"]


def spec_lines(spec: TrSpec) -> list[str]:
    """Everything the catalog knows about one endpoint, one fact a line."""
    mock = f"{spec.mock}: sends {spec.mock_tr_id}" if spec.mock_supported else f"{spec.mock}: not offered"
    paging = spec.paging.value + (f" ({', '.join(spec.paging_keys)})" if spec.paging_keys else "")
    facts = [
        ("name", f"{spec.name_ko}  ({spec.name})" if spec.name_ko != spec.name else spec.name),
        ("call", f"{spec.method} {spec.path}  (parameters in the {spec.params_in})"),
        ("tr_id", spec.tr_id),
        ("category", " / ".join(c for c in (spec.category, spec.subcategory) if c)),
        ("function", spec.function or "-"),
        ("kind", spec.kind),
        ("limit class", spec.limit_class.value),
        ("idempotent", "yes" if spec.idempotent else "no (never resent)"),
        ("paging", paging),
        ("mock", mock),
        ("required", ", ".join(missing_params(spec, {})) or "-"),
        ("status", "planned: published by the broker, not live yet" if spec.planned else "live"),
    ]
    return [f"{spec.provider.value} {spec.key}", *table([["", label, value] for label, value in facts])]


def _find(key: str) -> list[TrSpec]:
    exact = [s for s in entries() if s.key == key]
    return exact or [s for s in entries() if key.casefold() in (s.key.casefold(), s.tr_id.casefold())]


def cmd_catalog(args: argparse.Namespace) -> int:
    """Run one ``apihub catalog`` action; 1 when nothing matched or the file is stale (``--check``)."""
    if args.action == "generate":
        return _generate(args.source, check=args.check)
    if args.action == "show":
        found = _find(args.id)
        for i, spec in enumerate(found):
            print(*([""] if i else []), *spec_lines(spec), sep="\n")
        if not found:
            print(f"{args.id} is not in the catalog; try `apihub catalog search`", file=sys.stderr)
        return 0 if found else 1
    if args.action == "search":
        specs = search(" ".join(args.text))
    else:
        specs = entries(args.provider)
        if args.category:
            wanted = args.category.casefold()
            specs = tuple(s for s in specs if wanted in (s.category.casefold(), s.subcategory.casefold()))
    print(*endpoint_lines(specs), sep="\n")
    return 0 if specs else 1


def _generate(source: Path | None, *, check: bool) -> int:
    from hubclient import catalog_build

    source = source or catalog_build.DEFAULT_SOURCE
    try:
        text = catalog_build.generate(source)
    except FileNotFoundError as exc:
        print(f"error: the endpoint tables are not there: {exc.filename}", file=sys.stderr)
        return 2
    except NotADirectoryError:
        print(f"error: --source {source} is not a folder (it holds the two .tsv tables)", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot read the endpoint tables in {source}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyError as exc:  # a row without a column the build reads
        print(f"error: the endpoint tables in {source} lack the column {exc.args[0]!r}", file=sys.stderr)
        return 2
    except ValueError as exc:  # not UTF-8, a malformed row, an entry that cannot be keyed
        print(f"error: the endpoint tables in {source} cannot be used: {exc}", file=sys.stderr)
        return 2
    target = catalog_build.CATALOG_FILE
    if check:
        stale = not target.exists() or target.read_text(encoding="utf-8") != text
        print(f"{target.name} {'differs from' if stale else 'matches'} the tables in {source}")
        return 1 if stale else 0
    changed = catalog_build.write(source, target)
    print(f"{'wrote' if changed else 'unchanged'} {target} from {source}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``catalog`` command group on ``apihub``'s subparsers."""
    catalog = sub.add_parser("catalog", help="generate the endpoint catalog, or find an endpoint in it")
    actions = catalog.add_subparsers(dest="action", required=True)
    generate = actions.add_parser("generate", help="write libs/hubclient/catalog.json from the tables")
    generate.add_argument(
        "--source", type=Path, help="folder of the two .tsv tables (default ../shared/reference)"
    )
    generate.add_argument("--check", action="store_true", help="only compare; exit 1 when the file is stale")
    listing = actions.add_parser("list", help="every endpoint, or one provider's or category's")
    listing.add_argument("--provider", type=str.upper, choices=["KIS", "KIWOOM"])
    listing.add_argument("--category", help="category or subcategory, e.g. domestic_stock, 국내주식, 차트")
    show = actions.add_parser("show", help="everything about one endpoint")
    show.add_argument("id", help="tr_id or api-id, e.g. TTTC8434R, ka10080")
    find = actions.add_parser("search", help="endpoints whose id, path or name contain every word")
    find.add_argument("text", nargs="+", help="e.g. 잔고, balance, chart")
    for parser in (generate, listing, show, find):
        parser.set_defaults(func=cmd_catalog)
