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
    except ValueError:  # not a URL (an IPv6 host left open, say)
        return _USERINFO.sub(r"\g<user>:***@", url)
    if parts.scheme and parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return _USERINFO.sub(r"\g<user>:***@", url)
