"""``apihub credentials`` without Redis: the pool is listed (masked), never a secret, and the exit is 1."""

from __future__ import annotations

import json

import pytest

from services.cli import main
from services.credentials_cli import Row, mask, render

POOL = [
    {"name": "a", "appkey": "PS-key-of-a", "appsecret": "secret-of-a", "account": "50000001-01"},
    {"name": "b", "appkey": "PS-key-of-b", "appsecret": "secret-of-b", "rate_per_s": 5},
    {
        "name": "c",
        "appkey": "PS-key-of-c",
        "appsecret": "secret-of-c",
        "account": "50000003",
        "product_code": "22",
    },
]


def test_mask_hides_the_middle_of_an_account() -> None:
    assert (mask("50000001-01"), mask("12345678"), mask(None), mask("12")) == (
        "5000****-01",
        "1234****",
        "-",
        "12",
    )


def test_render_lines_up_and_shows_durations() -> None:
    row = Row("KIS", "a", "KIS/a", "real", "5000****-01", "abc", 20.0, 19, 180, 4000.0, 59.0)
    lines = render([row]).splitlines()
    assert lines[0].split()[:3] == ["PROVIDER", "MEMBER", "DOMAIN"]
    assert lines[1].split() == [
        "KIS",
        "a",
        "KIS/a",
        "real",
        "5000****-01",
        "abc",
        "20",
        "19",
        "18.0/s",
        "1h06m",
        "0m59s",
    ]


def test_without_redis_the_pool_is_listed_and_the_exit_is_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("APIHUB_KIS__CREDENTIALS", json.dumps(POOL))
    monkeypatch.setenv("APIHUB_REDIS__URL", "redis://:hunter2@127.0.0.1:1/0")
    monkeypatch.delenv("APIHUB_KIS__APPKEY", raising=False)
    assert main(["credentials", "--json"]) == 1
    out, err = capsys.readouterr()
    listed = json.loads(out)
    kis = [(r["member"], r["rate_per_s"], r["account"]) for r in listed if r["provider"] == "KIS"]
    assert kis == [("a", 20.0, "5000****-01"), ("b", 5.0, "-"), ("c", 20.0, "5000****-22")]
    assert all(r["token_left_s"] is None for r in listed)
    assert "not readable" in err and "127.0.0.1:1" in err
    for secret in ("PS-key-of-a", "secret-of-a", "secret-of-b", "hunter2"):
        assert secret not in out + err
