"""Addresses as they may be printed: every password masked, the rest as written."""

from __future__ import annotations

import pytest

from services.urls import masked


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("http://user:pw@host/x", "http://user:***@host/x"),
        ("redis://:pw@127.0.0.1:notaport/0", "redis://:***@127.0.0.1:notaport/0"),  # not a port, still masked
        ("user:pw@host", "user:***@host"),  # a Sentinel address that is no URL
        ("h:26379,user:pw@h:1", "h:26379,user:***@h:1"),
        ('["h:1", "u:pw@h:2"]', '["h:1", "u:***@h:2"]'),
        ("http://127.0.0.1:18081", "http://127.0.0.1:18081"),
        ("h:26379", "h:26379"),
        ("notaurl", "notaurl"),
    ],
)
def test_a_password_is_never_shown(value: str, shown: str) -> None:
    assert masked(value) == shown
