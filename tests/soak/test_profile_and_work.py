"""The soak's environments and the workers' task plan, without any service."""

from __future__ import annotations

import json
from datetime import date

import pytest

from services.history.job import parse_job
from services.sandbox.settings import SandboxSettings
from services.settings import GatewaySettings
from services.verification.task import VerificationTask
from tests.soak import profile, work
from tests.soak.profile import Addresses

ADDRESSES = Addresses(
    kafka="127.0.0.1:40001",
    redis_url="redis://127.0.0.1:40002/0",
    sandbox_url="http://127.0.0.1:40003",
    gateway_metrics_port=40004,
    worker_health_ports={"history-collector": 40005, "verification-worker": 40006, "recovery-worker": 40007},
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("APIHUB_A=1", {"APIHUB_A": "1"}),
        ("# APIHUB_A=1", {}),
        ("", {}),
        ("APIHUB_A=", {"APIHUB_A": ""}),
        ("APIHUB_A='like$this'", {"APIHUB_A": "like$this"}),
        ('APIHUB_A="x=y"', {"APIHUB_A": "x=y"}),
        ("not a setting", {}),
    ],
)
def test_parse_env_file(line: str, expected: dict[str, str]) -> None:
    """An env file line becomes a setting the way Compose reads it: comments skipped, quotes removed."""
    assert profile.parse_env_file(line) == expected


def test_gateway_env_is_the_production_file_with_the_stand_in() -> None:
    """The gateway keeps every value of .env.prod.example except the addresses, identity and keys, and says
    which it changed, never showing a key."""
    prod = profile.parse_env_file(profile.PROD_ENV_FILE.read_text())
    keys = profile.fake_keys()
    env, changed = profile.gateway_env(prod, ADDRESSES, keys)
    for key, value in prod.items():
        if value and key not in changed:
            assert env[key] == value
    assert env["APIHUB_KIS__BASE_URL"] == "http://127.0.0.1:40003/kis/real"
    assert env["APIHUB_KAFKA__BOOTSTRAP_SERVERS"] == "127.0.0.1:40001"
    assert env["APIHUB_INSTANCE_ID"] == "gateway-worker-real-1"
    assert "APIHUB_KAFKA__EXTRA_REPLY_TOPICS" not in env  # empty in the file: left to the default
    assert changed["APIHUB_KIS__APPSECRET"] == "(fake key)"
    assert not any(secret in str(changed) for secret in keys.values())
    assert "APIHUB_KIS__RATE_PER_S" not in changed


def test_gateway_env_builds_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway's settings load from the soak's environment with the production limits."""
    prod = profile.parse_env_file(profile.PROD_ENV_FILE.read_text())
    env, _ = profile.gateway_env(prod, ADDRESSES, profile.fake_keys())
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = GatewaySettings()
    assert (settings.kis.rate_per_s, settings.kiwoom.rate_per_s, settings.metrics_port) == (20, 5, 40004)
    assert settings.kiwoom.base_url == "http://127.0.0.1:40003/kiwoom/real"


def test_feed_env_builds_valid_sandbox_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The feed's settings (clock, gaps, corruption) load as the feed process loads them."""
    for key, value in profile.feed_env().items():
        monkeypatch.setenv(key, value)
    settings = SandboxSettings()
    assert settings.clock_start_time_kst == profile.CLOCK_START_KST
    assert [g.symbol for g in settings.feed.gaps] == ["*", "*"]
    assert settings.feed.gap_rate == profile.FEED_GAP_RATE


def test_worker_env_is_composes() -> None:
    """A worker gets Kafka, its own health port and a stable instance id, and no credential."""
    env = profile.worker_env("recovery-worker", ADDRESSES)
    assert env == {
        "APIHUB_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:40001",
        "APIHUB_HEALTH_PORT": "40007",
        "APIHUB_INSTANCE_ID": "recovery-worker-1",
    }


@pytest.mark.parametrize(
    ("day", "n", "expected"),
    [
        (date(2026, 11, 30), 1, date(2026, 11, 27)),  # Monday -> Friday
        (date(2026, 11, 27), 1, date(2026, 11, 26)),
        (date(2026, 11, 27), 5, date(2026, 11, 20)),
        (date(2026, 11, 29), 1, date(2026, 11, 27)),  # Sunday -> Friday
    ],
)
def test_weekdays_before(day: date, n: int, expected: date) -> None:
    """The n-th weekday before a day skips weekends."""
    assert work.weekdays_before(day, n) == expected


def test_history_jobs_are_valid_and_never_repeat_a_day() -> None:
    """Every history job parses as the collector parses it, alternates brokers and asks a new past day."""
    jobs = [work.history_job(n, date(2026, 11, 30)) for n in range(40)]
    parsed = [parse_job(json.dumps(job).encode()) for job in jobs]
    assert [j.provider.value for j in parsed[:4]] == ["KIS", "KIWOOM", "KIS", "KIWOOM"]
    assert len({j.first_day for j in parsed}) == 40
    assert all(j.first_day == j.last_day < date(2026, 11, 30) for j in parsed)
    assert all(len(j.symbols) == 2 for j in parsed)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ("09:10:59", []),
        ("09:11:00", [("09:00", "09:10")]),
        ("09:31:30", [("09:00", "09:10"), ("09:10", "09:20"), ("09:20", "09:30")]),
        ("08:00:00", []),
    ],
)
def test_closed_windows(now: str, expected: list[tuple[str, str]]) -> None:
    """A window is offered once it ended at least SETTLE_S before now."""
    hh, mm, ss = (int(x) for x in now.split(":"))
    windows = work.closed_windows(hh * 3600 + mm * 60 + ss)
    assert [(work.hhmm(a), work.hhmm(b)) for a, b in windows] == expected


def test_verification_plan_covers_every_window_once_per_pass() -> None:
    """The plan asks each closed (window, symbol) once, oldest first, then starts a new pass."""
    plan = work.VerificationPlan(date(2026, 11, 30), symbols=("005930", "000660"))
    assert plan.next_task(9 * 3600) is None
    now = 9 * 3600 + 21 * 60
    tasks = [plan.next_task(now) for _ in range(5)]
    assert all(t is not None for t in tasks)
    seen = [(t["symbol"], t["start"]) for t in tasks if t]
    assert seen[:4] == [("005930", "09:00"), ("000660", "09:00"), ("005930", "09:10"), ("000660", "09:10")]
    assert seen[4] == ("005930", "09:00") and plan.pass_no == 2
    assert len({t["task_id"] for t in tasks if t}) == 5
    for task in tasks:
        VerificationTask.model_validate(task)
