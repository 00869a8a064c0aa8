"""``python -m services.sandbox``: run the sandbox with settings from the environment."""

from __future__ import annotations

import asyncio
import contextlib
import sys

from services.logs import configure_logging
from services.sandbox.app import serve
from services.sandbox.settings import SandboxSettings
from services.settings import SettingsInvalid


def main() -> int:
    """Run the sandbox until interrupted (exit 2 when its settings cannot be used); logs as ``apihub
    sandbox`` does, so the sandbox's events keep their fields."""
    try:
        settings = SandboxSettings()
    except SettingsInvalid as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    configure_logging("INFO")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
