"""The README's metric table names every option the metrics accept, and no option they do not.

The table is written by hand (its wording is for people); `METRIC_OPTIONS` is what the code accepts.
A new option without a README line, or a README line for a removed one, fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

from gepa_action.metrics import METRIC_OPTIONS

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_metric_options(text: str) -> dict[str, set[str]]:
    """{metric: {option, ...}} from the table under `### Metrics` (a blank metric cell continues the one above)."""
    section = text.split("\n### Metrics\n", 1)[1].split("\n#", 1)[0]
    options: dict[str, set[str]] = {}
    metric = None
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or cells[0] in ("metric", "---") or set(cells[0]) == {"-"}:
            continue
        if cells[0]:
            metric = cells[0].strip("`")
        assert metric is not None, line
        options.setdefault(metric, set()).add(cells[1].strip("`"))
    return options


def test_the_readme_lists_every_metric_option() -> None:
    documented = readme_metric_options(README.read_text(encoding="utf-8"))
    accepted = {name: set(options) for name, options in METRIC_OPTIONS.items()}
    assert documented == accepted


def test_the_table_reader_sees_a_missing_option() -> None:
    text = README.read_text(encoding="utf-8")
    without = re.sub(r"\n\| +\| `pick` \|[^\n]*", "", text, count=1)
    assert without != text
    assert readme_metric_options(without)["numeric"] == set(METRIC_OPTIONS["numeric"]) - {"pick"}
