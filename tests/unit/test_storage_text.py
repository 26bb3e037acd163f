"""Search text helpers: hostile queries become inert terms; snippets are escaped."""

from __future__ import annotations

import sqlite3

import pytest

from server.storage.text import clean_text, fts5_match, highlight, search_terms, tsquery_or

HOSTILE = [
    '"',
    "'",
    "*",
    "OR",
    "NEAR(",
    "\\",
    "a OR b AND NOT c",
    '"unbalanced',
    "col:term",
    "^start",
    "x" * 10_240,
    "🙂🚀 émoji",
    "'; DROP TABLE captures; --",
    "(((",
    "-minus +plus",
]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_queries_are_valid_fts5(query: str) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(body)")
    db.execute("INSERT INTO t VALUES ('or near drop table captures émoji plus')")
    terms = search_terms(query)
    if terms:
        db.execute("SELECT count(*) FROM t WHERE t MATCH ?", (fts5_match(terms),)).fetchone()


def test_terms_are_bounded_and_deduplicated() -> None:
    terms = search_terms(" ".join(f"w{i}" for i in range(500)) + " W1 w1")
    assert len(terms) == 32
    assert search_terms("Spaced spaced SPACED repetition") == ["spaced", "repetition"]
    assert all(len(t) <= 64 for t in search_terms("y" * 5000))
    assert search_terms("\"*'\\()") == []


def test_tsquery_has_no_operators() -> None:
    q = tsquery_or(search_terms("x & b | !c <-> (d) e:*"))
    assert q == "x | b | c | d | e"


def test_function_words_are_dropped_unless_alone() -> None:
    assert search_terms("how does the forgetting curve work") == ["forgetting", "curve", "work"]
    assert search_terms("the who") == ["the", "who"]


def test_highlight_escapes_html_but_keeps_marks() -> None:
    out = highlight("<b>\x02spaced\x03</b> & co")
    assert out == "&lt;b&gt;<mark>spaced</mark>&lt;/b&gt; &amp; co"


def test_clean_text_strips_nul_and_sentinels() -> None:
    assert clean_text("a\x00b\x02c\x03d\ne\tf") == "abcd\ne\tf"
