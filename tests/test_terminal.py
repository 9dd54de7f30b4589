"""The CLI's one truncation helper: what `eval`, `tune` and the pre-commit gate print in their columns."""

from __future__ import annotations

from gepa_action.render.terminal import quoted, shorten


def test_shorten_puts_text_on_one_line_and_cuts_it_to_the_width() -> None:
    assert shorten("a\n\n b\tc", 10) == "a b c"
    assert shorten("x" * 30, 10) == "x" * 9 + "…"
    assert len(shorten("word " * 40, 24)) == 24


def test_a_cut_keeps_the_space_before_the_ellipsis_so_columns_stay_as_they_were() -> None:
    assert shorten("abcd efgh", 6) == "abcd …"


def test_quoted_shows_an_empty_output() -> None:
    assert quoted("", 30) == "''"
    assert quoted("it's\nfine", 30) == '"it\'s fine"'
    assert quoted("y" * 50, 30) == repr("y" * 29 + "…")
