"""The limits' pure parts, to the token: buckets, counts, the message budget, the client
address behind proxies, the origin rule and the context budget."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from pipelines.context_budget import fit_context
from pipelines.ports import Exchange
from server.limits.bucket import Counts, KeyedBuckets, Rate, TokenBucket
from server.limits.edge import ClientAddresses
from server.limits.messages import MessageBudget, Verdict
from server.limits.origin import origin_allowed
from server.limits.policy import address_key


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    rate = Rate(per_second=2.0, burst=3.0)
    bucket = TokenBucket(rate.burst, 0.0)
    assert [bucket.take(rate, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(rate, 0.0) == pytest.approx(0.5)  # one token is half a second away
    assert bucket.take(rate, 0.25) == pytest.approx(0.25)  # refused: nothing was taken
    assert bucket.take(rate, 0.5) == 0.0
    assert bucket.take(rate, 100.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # capped


def test_per_minute_rates_hold_a_quarter_minute() -> None:
    assert Rate.per_minute(1200) == Rate(20.0, 300.0)
    assert Rate.per_minute(2).burst == 1.0  # never less than one request


def test_keyed_buckets_are_apart_and_bounded() -> None:
    buckets = KeyedBuckets(Rate(1.0, 1.0), max_keys=2)
    assert buckets.take("a", 0.0) == 0.0 and buckets.take("a", 0.0) > 0
    assert buckets.take("b", 0.0) == 0.0
    buckets.take("c", 0.0)  # "a" is the least recently used: forgotten, starts full again
    assert len(buckets) == 2 and buckets.take("a", 0.0) == 0.0


def test_counts_hold_places_and_never_forget_a_held_one() -> None:
    counts = Counts(max_keys=1)
    assert counts.acquire("a", 2) and counts.acquire("a", 2) and not counts.acquire("a", 2)
    assert not counts.acquire("b", 5)  # the table is full of held places: refused, not forgotten
    counts.release("a")
    assert counts.held("a") == 1 and counts.acquire("a", 2)
    counts.release("a")
    counts.release("a")
    assert counts.held("a") == 0 and counts.acquire("b", 1)


def test_a_message_flood_is_told_once_a_second() -> None:
    budget = MessageBudget(per_second=10.0, now=0.0)
    verdicts = [budget.take(0.0) for _ in range(25)]
    assert verdicts[:20] == [Verdict.ALLOW] * 20  # a burst of twice the rate
    assert verdicts[20:] == [Verdict.DROP_AND_TELL] + [Verdict.DROP] * 4
    assert budget.take(0.5) == Verdict.ALLOW  # five tokens back after half a second
    for _ in range(4):
        budget.take(0.5)
    assert budget.take(0.5) == Verdict.DROP  # told 0.5 s ago: not again yet
    assert budget.take(1.0) == Verdict.ALLOW
    assert [budget.take(1.0) for _ in range(5)][-1] == Verdict.DROP_AND_TELL
    assert budget.dropped == 7


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        ("198.51.100.1", {"X-Forwarded-For": "203.0.113.9"}, "198.51.100.1"),  # not trusted
        ("10.0.0.2", {}, "10.0.0.2"),
        ("10.0.0.2", {"X-Forwarded-For": "203.0.113.9"}, "203.0.113.9"),
        ("10.0.0.2", {"X-Forwarded-For": "6.6.6.6, 203.0.113.9, 10.0.0.7"}, "203.0.113.9"),
        ("10.0.0.2", {"X-Forwarded-For": "10.0.0.5, 10.0.0.7"}, "10.0.0.5"),  # all inside
        ("10.0.0.2", {"X-Forwarded-For": "203.0.113.9:5555"}, "203.0.113.9"),
        ("10.0.0.2", {"X-Forwarded-For": "6.6.6.6, not-an-ip"}, "10.0.0.2"),  # unreadable hop
        ("10.0.0.2", {"Forwarded": "for=192.0.2.60"}, "10.0.0.2"),  # not the proxies' header
        ("::ffff:10.0.0.2", {"X-Forwarded-For": "203.0.113.9"}, "203.0.113.9"),  # dual stack
        ("::ffff:198.51.100.3", {}, "198.51.100.3"),
        (None, {}, "unknown"),
    ],
)
def test_the_client_is_the_rightmost_untrusted_hop(
    peer: str | None, headers: dict[str, str], client: str
) -> None:
    assert ClientAddresses(["10.0.0.0/8"]).client(peer, headers) == client


@pytest.mark.parametrize(
    ("value", "client"),
    [
        ("for=192.0.2.60;proto=http;by=10.0.0.2", "192.0.2.60"),
        ('for="[2001:DB8::1]:4711", for=10.0.0.9', "2001:db8::1"),
        ("for=_hidden", "10.0.0.2"),
    ],
)
def test_rfc7239_forwarded_when_the_proxies_write_it(value: str, client: str) -> None:
    addresses = ClientAddresses(["10.0.0.0/8"], header="forwarded")
    assert addresses.client("10.0.0.2", {"Forwarded": value}) == client
    # ... and then a client's own X-Forwarded-For is nothing but text.
    assert addresses.client("10.0.0.2", {"X-Forwarded-For": "6.6.6.6"}) == "10.0.0.2"


def test_every_line_of_the_header_counts() -> None:
    """A client's own line first, then the proxy's own line (HAProxy adds a header line)."""
    headers = CIMultiDict([("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "203.0.113.9")])
    assert ClientAddresses(["10.0.0.0/8"]).client("10.0.0.2", headers) == "203.0.113.9"


def test_without_trusted_proxies_forwarded_headers_are_ignored() -> None:
    addresses = ClientAddresses()
    assert addresses.client("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}) == "127.0.0.1"


@pytest.mark.parametrize(
    ("origin", "allowed", "ok"),
    [
        (None, (), True),  # not a browser page
        ("https://voice.example", (), True),  # same host, TLS ended at a proxy
        ("http://voice.example:8080", (), False),  # another port is another origin
        ("https://evil.example", (), False),
        ("null", (), False),
        ("https://evil.example", ("*",), True),
        ("https://app.example", ("https://app.example",), True),
        ("https://APP.example/", ("https://app.example",), True),
        ("https://public.example", (), True),  # PUBLIC_URL's origin
        ("http://[", (), False),  # not even a URL: refused, not a crash
    ],
)
def test_origins(origin: str | None, allowed: tuple[str, ...], ok: bool) -> None:
    assert origin_allowed(origin, "voice.example", allowed, "https://public.example") is ok


def test_context_keeps_the_newest_exchanges_that_fit() -> None:
    history = [Exchange("a" * 40, "b" * 60, float(i)) for i in range(5)]  # 100 chars each
    assert fit_context(history, "q" * 50, 350) == history[-3:]
    assert fit_context(history, "q" * 50, 349) == history[-2:]
    assert fit_context(history, "q" * 500, 350) == []
    long = Exchange("x" * 500, "", 9.0)
    mixed = [*history[:3], long, history[4]]
    assert fit_context(mixed, "q", 650) == [long, history[4]]
    assert fit_context(mixed, "q", 450) == [history[4]]  # older short ones never jump the long


def test_ipv6_clients_are_counted_by_their_64() -> None:
    assert address_key("203.0.113.9") == "203.0.113.9"
    assert address_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    assert address_key("::ffff:198.51.100.4") == "198.51.100.4"
    assert address_key("unknown") == "unknown"
