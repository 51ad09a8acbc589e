"""Every example in docs/sql.md runs against chdb and returns the columns the cookbook documents."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

COOKBOOK = Path(__file__).parent.parent / "docs" / "sql.md"
_EXAMPLE = re.compile(r"<!-- columns: (?P<columns>[^>]*) -->\n(?:<!-- params: (?P<params>[^>]*) -->\n)?```sql\n"
                      r"(?P<sql>.*?)```", re.S)


def examples() -> list[tuple[str, list[str], dict[str, str], str]]:
    text = COOKBOOK.read_text()
    found = []
    for match in _EXAMPLE.finditer(text):
        title = text[:match.start()].rstrip().rsplit("### ", 1)[-1].strip()
        params = dict(p.strip().split("=", 1) for p in (match["params"] or "").split(",") if p.strip())
        found.append((title, [c.strip() for c in match["columns"].split(",")], params, match["sql"]))
    return found


EXAMPLES = examples()


def test_the_cookbook_has_an_example_for_each_question() -> None:
    assert len(EXAMPLES) >= 15
    assert len(EXAMPLES) == COOKBOOK.read_text().count("```sql")  # none without its columns line


@pytest.mark.parametrize(("title", "columns", "params", "sql"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_cookbook_example(seeded_store, title: str, columns: list[str], params: dict[str, str], sql: str) -> None:
    result = seeded_store.query(sql.strip(), params)
    assert result.columns == columns
    assert result.rows, f"{title!r} returned no rows on the seeded data"
    # as `spendstream sql` runs it: one statement, read-only as ClickHouse enforces it
    assert seeded_store.run_statement(sql.strip(), params, "CSV").count(b"\n") == len(result.rows)
