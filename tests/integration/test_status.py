"""``apihub status`` driven in a pseudo-terminal against a real gateway process: frames, figures, Ctrl-C.

The command runs as its own process with a pty (80 columns, 24 rows) as its controlling terminal, so Ctrl-C
is a ``\\x03`` typed into the terminal and the line discipline turns it into SIGINT, as over SSH.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import re
import struct
import sys
import termios
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from hubclient import HubClient
from services.settings import GatewaySettings
from tests import processes
from tests.conftest import Services
from tests.integration.conftest import Topics, free_port, gateway_process
from tests.params import distinct_price

PRICE = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
COLUMNS, ROWS = 80, 24
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
HOME = "\x1b[H"
SHOW_CURSOR = "\x1b[?25h"
#: The child makes the pty its controlling terminal, then becomes ``apihub status``.
WITH_TERMINAL = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, '-m', 'services.cli', *sys.argv[1:]])"
)


@dataclass
class Terminal:
    """The master side of a pty running ``apihub status``: everything it printed, split into frames."""

    master: int
    proc: asyncio.subprocess.Process
    raw: str = ""
    closed: bool = False
    _decoder: Callable[[bytes], str] = field(default=lambda b: b.decode(errors="replace"))

    def pump(self) -> None:
        """Read whatever the command printed since the last call."""
        while not self.closed:
            try:
                chunk = os.read(self.master, 65536)
            except BlockingIOError:
                return
            except OSError as exc:  # EIO: the child is gone and the slave closed
                if exc.errno != errno.EIO:
                    raise
                self.closed = True
                return
            if not chunk:
                self.closed = True
                return
            self.raw += self._decoder(chunk)

    def frames(self) -> list[list[str]]:
        """Every complete frame drawn so far, as text lines without escape sequences."""
        parts = self.raw.split(HOME)[1:]
        complete = [p for p in parts if "\x1b[J" in p]
        return [
            [ESCAPE.sub("", line) for line in p.split("\x1b[J")[0].split("\r\n") if line] for p in complete
        ]

    async def wait_for(self, check: Callable[[list[str]], bool], timeout_s: float) -> list[str]:
        """The first new frame for which ``check`` holds, waiting up to ``timeout_s``."""
        seen = len(self.frames())
        async with asyncio.timeout(timeout_s):
            while True:
                self.pump()
                frames = self.frames()
                for frame in frames[seen:]:
                    if check(frame):
                        return frame
                seen = len(frames)
                assert not self.closed, f"apihub status ended early:\n{ESCAPE.sub('', self.raw)[-2000:]}"
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def status_in_pty(*args: str) -> AsyncIterator[Terminal]:
    """``apihub status ARGS`` with an 80x24 pty as its controlling terminal; killed if still running at the
    end."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    env = processes.clean_env(TERM="xterm")
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WITH_TERMINAL,
        "status",
        *args,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=processes.REPO,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    os.set_blocking(master, False)
    try:
        yield Terminal(master, proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)


def pacing_row(frame: list[str], provider: str) -> tuple[str, int]:
    """The calls/s cell and the calls total of ``provider``'s row in the PACING table."""
    start = next(i for i, line in enumerate(frame) if line.startswith("PACING"))
    row = next(line for line in frame[start + 1 :] if line.split()[0] == provider)
    cells = row.split()
    return cells[1], int(cells[-1])


def answered_ok(frame: list[str]) -> int:
    """The ``ok`` count of the frame's answers line."""
    answers = next(line for line in frame if line.startswith("answers"))
    found = re.search(r"\bok (\d+)", answers)
    assert found is not None, answers
    return int(found.group(1))


async def test_status_draws_live_frames_and_quits_on_ctrl_c(
    services: Services, topics: Topics, gateway_settings: GatewaySettings
) -> None:
    """In a pty, apihub status redraws 80-column frames, its KIS figures move with requests, and Ctrl-C ends
    it with exit code 0 and the cursor restored."""
    nobody = f"http://127.0.0.1:{free_port()}"  # a worker that is down
    async with (
        gateway_process(gateway_settings) as gateway,
        status_in_pty(
            "--interval", "0.5", "--gateway", gateway.metrics_url, "--worker", f"history-collector={nobody}"
        ) as term,
    ):
        first = await term.wait_for(lambda f: any(line.startswith("gateway  up") for line in f), 30)
        assert all(len(line) <= COLUMNS for line in first), first
        assert len(first) < ROWS
        assert any(line.startswith("history-collector") and "DOWN" in line for line in first), first
        _, calls_before = pacing_row(first, "KIS")

        async with HubClient.connect(
            services.kafka_bootstrap,
            caller="status-test",
            request_topic=topics.requests,
            reply_topic=topics.responses,
        ) as hub:
            await asyncio.gather(
                *(hub.execute("KIS", "FHKST01010100", distinct_price(), timeout=20) for _ in range(10))
            )

        moved = await term.wait_for(
            lambda f: pacing_row(f, "KIS")[1] >= calls_before + 10 and answered_ok(f) >= 10, 15
        )
        assert all(len(line) <= COLUMNS for line in moved), moved
        print("\n".join(moved))  # shown with -s or on failure: what an operator sees
        frames = term.frames()
        rates = [pacing_row(f, "KIS")[0] for f in frames[frames.index(first) :]]
        assert any(r not in ("-", "0.0") for r in rates), rates  # calls per second were seen moving

        os.write(term.master, b"\x03")  # Ctrl-C typed into the terminal
        code = await asyncio.wait_for(term.proc.wait(), 10)
        term.pump()
    text = ESCAPE.sub("", term.raw)
    assert code == 0, text[-2000:]
    assert "Traceback" not in text
    assert term.raw.rstrip().endswith(SHOW_CURSOR) or SHOW_CURSOR in term.raw[-50:]
