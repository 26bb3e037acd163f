"""Split a stream of LLM text deltas into speakable pieces for TTS.

The first piece is released early (at a clause boundary once it is long enough) so the
first audio starts while the model is still writing; later pieces are whole sentences.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s)")
_CLAUSE_END = re.compile(r"[,;:—]\s")


class SentenceChunker:
    def __init__(self, first_clause_min_chars: int = 40, max_chars: int = 240) -> None:
        self._buf = ""
        self._first = True
        self._first_clause_min = first_clause_min_chars
        self._max = max_chars

    def push(self, delta: str) -> list[str]:
        self._buf += delta
        out: list[str] = []
        while True:
            piece = self._take()
            if piece is None:
                return out
            if piece:
                out.append(piece)

    def flush(self) -> list[str]:
        rest, self._buf = self._buf.strip(), ""
        return [rest] if rest else []

    def _take(self) -> str | None:
        buf = self._buf
        m = _SENTENCE_END.search(buf)
        cut = m.end() if m else -1
        if cut < 0 and self._first:
            c = _CLAUSE_END.search(buf, self._first_clause_min)
            cut = c.start() + 1 if c else -1
        if cut < 0 and len(buf) > self._max:
            space = buf.rfind(" ", 0, self._max)
            cut = space if space > 0 else self._max
        if cut < 0:
            return None
        self._first = False
        self._buf = buf[cut:].lstrip()
        return buf[:cut].strip()
