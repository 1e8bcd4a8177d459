"""The documentation holds what the code does: every setting with its default, links that
resolve, and a README that stays one page."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from recommender.config import AlertsConfig, ServeConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cls", [TrainConfig, ServeConfig, AlertsConfig])
def test_configuration_page_lists_every_setting_with_its_default(cls: type) -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    for spec in dataclasses.fields(cls):
        row = next(
            (line for line in page.splitlines() if line.startswith(f"| `{spec.name}` |")), None
        )
        assert row is not None, f"{spec.name} is not in docs/configuration.md"
        assert f"`RECO_{spec.name.upper()}`" in row
        default = spec.default if spec.default is not dataclasses.MISSING else None
        if isinstance(default, tuple):
            default = ",".join(default)
        if default not in (None, "") and spec.name != "workers":
            assert f"`{default}`" in row, f"{spec.name}: the default {default!r} is not in its row"


def test_readme_is_one_page_and_every_link_resolves() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), (
                f"{page.name} links to {target}, which does not exist"
            )
