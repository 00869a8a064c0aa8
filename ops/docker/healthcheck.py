#!/usr/bin/env python3
"""Container health probe of the API Hub image (installed as ``apihub-healthcheck``); standard library only.

    apihub-healthcheck                      GET /readyz on this container's own health port
    apihub-healthcheck http://host:port/p   GET that URL: healthy on a 2xx answer
    apihub-healthcheck tcp://host:port      healthy when a TCP connection opens (for a process without HTTP)

The own port is ``APIHUB_HEALTH_PORT`` (workers) or else ``APIHUB_METRICS_PORT`` (gateway, default 18081).
Exit 0 healthy, 1 not, as Docker's HEALTHCHECK expects. One line on stdout says why, for ``docker inspect``.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit

TIMEOUT_S = 4.0


def own_readyz() -> str:
    """The default target: /readyz on the port this container's service listens on."""
    port = os.environ.get("APIHUB_HEALTH_PORT") or os.environ.get("APIHUB_METRICS_PORT") or "18081"
    return f"http://127.0.0.1:{port}/readyz"


def probe(target: str, timeout_s: float = TIMEOUT_S) -> tuple[bool, str]:
    """Whether ``target`` answers (a 2xx for http, an open connection for tcp), and a reason."""
    parts = urlsplit(target)
    if parts.scheme == "tcp":
        if not parts.hostname or parts.port is None:
            return False, f"{target}: expected tcp://host:port"
        try:
            with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s):
                return True, f"{target}: connected"
        except OSError as exc:
            return False, f"{target}: {exc}"
    if parts.scheme not in ("http", "https"):
        return False, f"{target}: expected an http(s):// or tcp:// address"
    try:
        with urllib.request.urlopen(target, timeout=timeout_s) as answer:  # noqa: S310 - scheme checked above
            return 200 <= answer.status < 300, f"{target}: HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{target}: HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"{target}: {exc}"


def main(argv: list[str]) -> int:
    """Probe the target named in ``argv`` (or the container's own /readyz) and return the exit code."""
    target = argv[1] if len(argv) > 1 else own_readyz()
    healthy, reason = probe(target)
    print(reason)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
