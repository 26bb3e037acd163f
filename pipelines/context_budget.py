"""How much remembered conversation one turn may send to a language model: pure.

A paid model is billed for every token of context, every turn; without a bound, a few
long turns make every later turn of the session expensive. `fit_context` keeps the newest
exchanges whose characters, with the new user text, fit `max_chars`; older ones are left
out of this request (they stay remembered and recapped). The new user text itself is
never cut: the edges bound it (MAX_TEXT_CHARS).
"""

from __future__ import annotations

from collections.abc import Sequence

from pipelines.ports import Exchange


def fit_context(history: Sequence[Exchange], user_text: str, max_chars: int) -> list[Exchange]:
    budget = max_chars - len(user_text)
    kept: list[Exchange] = []
    for exchange in reversed(history):
        cost = len(exchange.user) + len(exchange.agent)
        if cost > budget:
            break  # contiguous: never an older exchange without the ones after it
        budget -= cost
        kept.append(exchange)
    kept.reverse()
    return kept
