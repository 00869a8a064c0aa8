"""``python -m services.sandbox``: run the sandbox with settings from the environment."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.sandbox.app import serve
from services.sandbox.settings import SandboxSettings


def main() -> None:
    """Run the sandbox until interrupted."""
    logging.basicConfig(
        level=logging.INFO, format='{"ts":"%(asctime)s","level":"%(levelname)s","event":"%(message)s"}'
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(SandboxSettings()))


if __name__ == "__main__":
    main()
