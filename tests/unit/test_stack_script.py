"""ops/stack.sh's handling of env files, run function by function in bash (no stack is started)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from services.config_check import parse_env, shell_pairs

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "ops" / "stack.sh"

POOL = '[{"name":"main","appkey":"k$HOME`touch ran`","appsecret":"a b $(touch ran)"}]'


def stack_function(name: str) -> str:
    """The text of one function of ops/stack.sh, as written there."""
    found = re.search(rf"^{name}\(\) {{\n.*?^}}\n", STACK.read_text(), re.S | re.M)
    assert found, f"ops/stack.sh has no function {name}"
    return found.group(0)


def run_bash(script: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``script`` in bash with stack.sh's shell options and its ``die``."""
    prelude = (
        'set -euo pipefail\ndie() { echo "stack: error: $*" >&2; exit 1; }\n'
        f"PYTHON={sys.executable}\nREPO_ROOT={REPO}\n"
    )
    return subprocess.run(
        ["bash", "-c", prelude + script, "bash", *args], cwd=cwd, capture_output=True, text=True, check=False
    )


def test_shell_pairs_keep_values_as_written_and_leave_out_empty_ones() -> None:
    """Each variable is one NUL-ended KEY=VALUE, quotes and $ kept; an empty value is no variable."""
    parsed = parse_env(f"APIHUB_KIS__CREDENTIALS='{POOL}'\nAPIHUB_REDIS__URL=\nexport A=\"x y\"\nb.c=1\n")
    assert shell_pairs(parsed) == f"APIHUB_KIS__CREDENTIALS={POOL}\0A=x y\0".encode()


def test_the_gateway_gets_the_env_file_as_written(tmp_path: Path) -> None:
    """A JSON credential pool keeps its quotes, nothing in a value is expanded or run, and an empty line
    copied from .env.example does not hide the stack's Redis address set before it."""
    env = tmp_path / ".env"
    env.write_text(f"APIHUB_KIS__CREDENTIALS={POOL}\nAPIHUB_REDIS__URL=\nAPIHUB_KAFKA__BOOTSTRAP_SERVERS=\n")
    script = stack_function("export_env_file") + (
        "export APIHUB_REDIS__URL=redis://127.0.0.1:16379/0\n"
        'export_env_file "$1"\n'
        'printf "%s\\n" "$APIHUB_KIS__CREDENTIALS" "$APIHUB_REDIS__URL"\n'
        'printf "%s\\n" "${APIHUB_KAFKA__BOOTSTRAP_SERVERS-unset}"\n'
        'bash -c \'printf "%s\\n" "$APIHUB_KIS__CREDENTIALS"\'\n'  # exported, not just set
    )
    result = run_bash(script, tmp_path, str(env))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [POOL, "redis://127.0.0.1:16379/0", "unset", POOL]
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("text", ["APIHUB_KIS__APPKEY\n", 'APIHUB_KIS__APPSECRET="unclosed\n'])
def test_an_env_file_that_cannot_be_read_stops_the_gateway_start(tmp_path: Path, text: str) -> None:
    """A line that is not KEY=VALUE stops the start, naming the line but never echoing it."""
    env = tmp_path / ".env"
    env.write_text(text)
    result = run_bash(
        stack_function("export_env_file") + 'export_env_file "$1"\necho started\n', tmp_path, str(env)
    )
    assert result.returncode == 1 and "started" not in result.stdout
    assert "line 1" in result.stderr and "cannot be read" in result.stderr and "unclosed" not in result.stderr


def test_status_watches_the_workers_where_the_stack_put_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stack.env, as ``make up`` writes it with moved ports, gives ``apihub status`` each worker's address
    (not the default 18091-18093)."""
    from services.status.targets import StatusSettings, targets

    stack_env = tmp_path / "stack.env"
    script = (
        f"LOCAL_DIR={tmp_path}\nSTACK_ENV={stack_env}\nHOST=127.0.0.1\nREDIS_PORT=1\nSANDBOX_PORT=2\n"
        "GATEWAY_METRICS_PORT=3\nHISTORY_PORT=33091\nVERIFICATION_PORT=33094\nRECOVERY_PORT=33095\n"
        "kafka_bootstrap() { echo 127.0.0.1:4; }\n" + stack_function("write_stack_env") + "write_stack_env\n"
    )
    assert run_bash(script, tmp_path).returncode == 0
    for name in list(os.environ):
        if name.startswith("APIHUB_"):
            monkeypatch.delenv(name)
    watched = targets(StatusSettings(_env_file=stack_env))
    assert {e.name: e.url for e in watched.endpoints} == {
        "gateway": "http://127.0.0.1:3",
        "history-collector": "http://127.0.0.1:33091",
        "verification-worker": "http://127.0.0.1:33094",
        "recovery-worker": "http://127.0.0.1:33095",
    }
