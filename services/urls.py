"""URLs as they may be printed: a password in one (``redis://:pw@host``, ``http://user:pw@host``) never is."""

from __future__ import annotations

from urllib.parse import urlsplit


def masked(url: str) -> str:
    """``url`` with its password, if any, shown as ``***``; a value that is not a URL comes back as it is."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return url
    return url.replace(f":{password}@", ":***@", 1) if password else url
