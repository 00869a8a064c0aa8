"""The suites' markers follow the test directories, wherever the checkout lives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import conftest as root
from tests.chaos import conftest as chaos

TESTS = Path(root.__file__).resolve().parent


@dataclass
class _Item:
    path: Path
    marks: list[str] = field(default_factory=list)

    def add_marker(self, mark: pytest.MarkDecorator) -> None:
        self.marks.append(mark.name)


def _marked(hook: object, *paths: Path) -> list[list[str]]:
    items = [_Item(path) for path in paths]
    hook(items)  # type: ignore[operator]
    return [item.marks for item in items]


def test_only_the_integration_directory_is_marked_integration(tmp_path: Path) -> None:
    # a checkout that lives under folders named like the suites is not one of them
    elsewhere = tmp_path / "integration" / "chaos" / "tests" / "unit" / "test_x.py"
    assert _marked(
        root.pytest_collection_modifyitems,
        TESTS / "integration" / "test_x.py",
        TESTS / "unit" / "test_x.py",
        TESTS / "chaos" / "test_x.py",
        elsewhere,
    ) == [["integration"], [], [], []]


def test_only_the_chaos_directory_is_marked_chaos_and_integration(tmp_path: Path) -> None:
    elsewhere = tmp_path / "chaos" / "tests" / "unit" / "test_x.py"
    assert _marked(
        chaos.pytest_collection_modifyitems,
        TESTS / "chaos" / "test_x.py",
        TESTS / "integration" / "test_x.py",
        elsewhere,
    ) == [["chaos", "integration"], [], []]


def test_a_checkout_in_a_folder_named_like_a_suite_is_marked_as_usual(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``git clone . /tmp/chaos`` once left ``make chaos`` with nothing selected."""
    checkout = tmp_path / "chaos" / "integration"
    monkeypatch.setattr(chaos, "CHAOS_DIR", checkout / "tests" / "chaos")
    monkeypatch.setattr(root, "INTEGRATION_DIR", checkout / "tests" / "integration")
    suite, unit = checkout / "tests" / "chaos" / "test_x.py", checkout / "tests" / "unit" / "test_x.py"
    assert _marked(chaos.pytest_collection_modifyitems, suite, unit) == [["chaos", "integration"], []]
    integration = checkout / "tests" / "integration" / "test_x.py"
    assert _marked(root.pytest_collection_modifyitems, integration, unit) == [["integration"], []]
