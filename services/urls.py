"""URLs as they may be printed: a password in one (``redis://:pw@host``, ``http://user:pw@host``, or a bare
``user:pw@host:port``) never is."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# user:password@ in a value that is not a URL (a Sentinel address, a list of them)
_USERINFO = re.compile(r"(?P<user>[^\s,:@/\[\]\"']*):[^\s,@/\"']*@")


def masked(url: str) -> str:
    """``url`` with its password, if any, shown as ``***``; in a value that is not a URL every
    ``user:password@`` is masked, and the rest comes back as it is."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        password, parts = None, None
    if password and parts is not None and parts.scheme:
        return url.replace(f":{password}@", ":***@", 1)
    return _USERINFO.sub(r"\g<user>:***@", url)
