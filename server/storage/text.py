"""Turning untrusted text into safe search expressions and safe highlighted snippets.

Search syntax (FTS5 `MATCH`, Postgres `to_tsquery`) has operators, quotes and parentheses;
a user's query must never be parsed as any of them. We keep only runs of letters and
digits, quote each one, and join them with OR so that natural sentences still rank by
how many of their words a capture shares (bm25 / ts_rank weight the rare ones).
"""

from __future__ import annotations

import html
import re

MAX_TERMS = 32
MAX_TERM_CHARS = 64
# Highlight sentinels: control characters we strip from stored text, so they can only
# come from snippet()/ts_headline() and are swapped for <mark> after HTML escaping.
MARK_START = "\x02"
MARK_END = "\x03"

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# Function words match nearly every capture; OR-ing them in would let "how do I ..." rank
# noise above the capture that shares the query's one real word.
STOPWORDS = frozenset(
    "a an and are as at be been but by can could did do does doing for from had has have "
    "how i i'm if in into is it its me my of on or our so than that the their them then "
    "there these they this those to was we were what when where which who why will with "
    "would you your about thing things".split()
)


def search_terms(query: str) -> list[str]:
    """Distinct lower-case words of the query, in order, bounded in count and length;
    function words are dropped unless the query has nothing else."""
    seen: dict[str, None] = {}
    for match in _WORD.finditer(query[: MAX_TERMS * (MAX_TERM_CHARS + 1) * 4]):
        term = match.group(0).lower()[:MAX_TERM_CHARS]
        seen.setdefault(term, None)
        if len(seen) >= MAX_TERMS:
            break
    content = [t for t in seen if t not in STOPWORDS]
    return content or list(seen)


def fts5_match(terms: list[str]) -> str:
    """An FTS5 MATCH expression: every term a quoted string, OR-ed together."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def tsquery_or(terms: list[str]) -> str:
    """Text for Postgres `to_tsquery`: letters/digits only, so no operator can appear."""
    return " | ".join(terms)


def clean_text(text: str) -> str:
    """Stored text without NUL (Postgres rejects it) or other control characters."""
    return _CONTROL.sub("", text)


def highlight(raw_snippet: str) -> str:
    """HTML-escape a snippet, then turn the sentinels into <mark>...</mark>."""
    escaped = html.escape(raw_snippet, quote=False)
    return escaped.replace(MARK_START, "<mark>").replace(MARK_END, "</mark>")


def plain_snippet(text: str, limit: int = 200) -> str:
    """Snippet for a hit found by meaning only: the start of the text, escaped."""
    short = text if len(text) <= limit else text[:limit].rstrip() + "…"
    return html.escape(short, quote=False)
