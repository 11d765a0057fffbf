"""Substring search in Chinese without a word segmenter.

Chinese has no spaces between words, so word-based full-text search does not apply. Queries of
three or more characters use trigram indexes (SQLite FTS5 ``tokenize='trigram'``; PostgreSQL
``pg_trgm``). Two-character queries (退款, 分期, most given names) are common and too short for
trigrams, so a second index holds each text's overlapping character pairs: a SQLite FTS5 table of
space-separated pairs, and on PostgreSQL a GIN index over ``jiefen_bigrams(text)``, an immutable
SQL function that computes the same pairs as :func:`bigrams` here. Pairs that contain a space or
punctuation are left out on both sides.
"""

from __future__ import annotations

import re

# Keep in step with the SQL function in migrations/versions/*_0005_search.py.
SEPARATORS = " \t\r\n,.;:!?，。；：！？、“”‘’（）()《》【】\"'-"
_SEPARATOR = re.compile("[" + re.escape(SEPARATORS) + "]")


def bigram_set(text: str | None) -> list[str]:
    """The distinct overlapping character pairs of ``text``, lower-cased, in first-seen order."""
    if not text:
        return []
    text = text.lower()
    seen: dict[str, None] = {}
    for i in range(len(text) - 1):
        pair = text[i : i + 2]
        if not _SEPARATOR.search(pair):
            seen.setdefault(pair, None)
    return list(seen)


def bigrams(text: str | None) -> str:
    """The pairs as one space-separated string: the SQLite FTS5 table's content."""
    return " ".join(bigram_set(text))


def fts_phrase(query: str) -> str:
    """An FTS5 phrase that matches ``query`` literally (double quotes doubled)."""
    return '"' + query.replace('"', '""') + '"'
