"""``apihub schemas generate|check``: keep ``schemas/*.schema.json`` and ``schemas/asyncapi.yaml`` equal to
the models."""

from __future__ import annotations

from pathlib import Path

import orjson

from hubclient.schema import json_schemas
from services import asyncapi

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"


def rendered() -> dict[str, bytes]:
    """The schema files as they should be on disk."""
    files = {
        name: orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        for name, doc in json_schemas().items()
    }
    files[asyncapi.FILE_NAME] = asyncapi.rendered()
    return files


def stale(directory: Path = SCHEMAS_DIR) -> list[str]:
    """Names of schema files that are missing or differ from the models."""
    return [
        name
        for name, data in rendered().items()
        if not (directory / name).is_file() or (directory / name).read_bytes() != data
    ]


def write(directory: Path = SCHEMAS_DIR) -> list[str]:
    """Write every schema file; returns the names written."""
    files = rendered()
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return sorted(files)
