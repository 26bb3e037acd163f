"""What a conversation covered, in one sentence: the goodbye summary.

Every language model answers `LanguageModel.recap` with this, so that hanging up never
waits on the network and two sessions with the same history end on the same words. The
key phrase of each user turn is the longest run of content words (no stopwords), which is
also how the embedded coach (`pipelines.llm.coach`) finds what a turn was about.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pipelines.ports import Exchange

_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just let me more most my myself no nor not now of off on once only or other our
    ours ourselves out over own really same she should so some such than that the their theirs
    them themselves then there these they this those through to too under until up very was we
    were what when where which while who whom why will with would you your yours yourself
    yourselves i'm i've i'd i'll it's that's there's let's don't doesn't didn't can't won't
    today learned learning learn learnt studying study reading read think thinking thought
    know knew something thing things stuff like also well okay ok yeah yes um uh actually
    basically pretty much lot lots kind sort way really quite just get got getting make made
    want wanted going gonna need trying try tried use used using one two new good great
    interesting cool fact found find say said says tell told mean means improve improves
    help helps helped make makes cause causes increase increases reduce reduces work works
    show shows allow allows keep keeps give gives take takes become becomes seem seems
    explain explains describe describes called named remember""".split()
)


def key_phrase(text: str, max_words: int = 3) -> str:
    """The most content-bearing run of words: the longest stretch without stopwords,
    ties broken by total word length, then by position."""
    words = _WORD.findall(text)
    best: list[str] = []
    run: list[str] = []
    for w in [*words, ""]:
        if w and w.lower() not in STOPWORDS and len(w) > 2:
            run.append(w)
            continue
        if run and (len(run), sum(map(len, run))) > (len(best), sum(map(len, best))):
            best = run
        run = []
    return " ".join(best[:max_words]).lower()


def recap(history: Sequence[Exchange]) -> str:
    """The topics of the user's turns, oldest first, each once, in one goodbye sentence."""
    topics: list[str] = []
    for ex in history:
        phrase = key_phrase(ex.user)
        if phrase and phrase not in topics:
            topics.append(phrase)
    if not topics:
        return "Thanks for talking with me. Goodbye!"
    listed = topics[0] if len(topics) == 1 else ", ".join(topics[:-1]) + " and " + topics[-1]
    return f"Today you covered {listed}. Nice work, and goodbye!"
