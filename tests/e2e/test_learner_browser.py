"""Learners own their data, in a real browser against the real server.

A browser context is one browser profile: its tabs share localStorage, so they are one
learner (the token the page obtained on its first visit), while each tab keeps its own
session id. Another context is another learner. Turns are typed (`text` messages): speech
is not the point here, and typed turns keep each test within a few seconds of work.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser_util import (
    CHROMIUM,
    Server,
    chromium_args,
    chromium_missing_reason,
    lva,
    wait_lva,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

_missing = chromium_missing_reason()
if _missing:
    pytestmark.append(pytest.mark.skip(reason=f"BROWSER TESTS SKIPPED: {_missing}"))

VIEWPORT = {"width": 1000, "height": 760}
TOKEN_KEY = "lva.learnerToken"
SESSION_KEY = "lva.sessionId"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("learners"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args(None))
        yield b
        b.close()


class Learner:
    """One browser context (one learner) and the tabs opened in it."""

    def __init__(self, browser: Any, server: Server) -> None:
        self.server = server
        self.context = browser.new_context(viewport=VIEWPORT)
        self.errors: list[str] = []
        self.requests: list[tuple[str, str, str | None]] = []  # method, url, authorization
        self.sockets: list[str] = []
        self.context.on(
            "request",
            lambda r: self.requests.append((r.method, r.url, r.headers.get("authorization"))),
        )

    def tab(self) -> Any:
        page = self.context.new_page()
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("websocket", lambda ws: self.sockets.append(ws.url))
        page.goto(self.server.url + "/?transport=ws")  # the WebSocket path's tests
        wait_lva(page, "s.connection === 'open'")
        return page

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], f"uncaught page errors: {self.errors}"


@pytest.fixture
def learners(browser: Any, server: Server) -> Iterator[Any]:
    made: list[Learner] = []

    def make() -> Learner:
        made.append(Learner(browser, server))
        return made[-1]

    yield make
    for learner in made:
        learner.close()


def token_of(page: Any) -> str:
    token = page.evaluate(f"localStorage.getItem({TOKEN_KEY!r})")
    assert token, "the page kept no learner token"
    return str(token)


def call(
    server: Server, method: str, path: str, token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(server.url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode(errors="replace")


def say(page: Any, text: str) -> None:
    """A typed turn; returns once its reply is complete."""
    before = lva(page, "replies")
    page.fill("#text-input", text)
    page.press("#text-input", "Enter")
    wait_lva(page, f"s.replies.length > {len(before)}", 30)


def wait_captures(server: Server, token: str, session_id: str, n: int) -> list[dict]:
    """The session's captures once there are `n` (they are written in batches)."""
    deadline = time.monotonic() + 10
    while True:
        status, body = call(server, "GET", f"/api/sessions/{session_id}/history", token)
        if status == 200 and body["count"] >= n:
            return body["captures"]
        if time.monotonic() > deadline:
            pytest.fail(f"session {session_id} never had {n} captures: {status} {body}")
        time.sleep(0.2)


def texts(page: Any, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).all_inner_texts()]


def show_history(page: Any, sessions: int) -> Any:
    page.click("#nav-history")
    wait_lva(page, f"s.view === 'history' && s.historySessions === {sessions}", 15)
    return page.locator("#sessions li.session-row")


def search(page: Any, query: str) -> list[tuple[str, str]]:
    """Search from the page: (session id, what was said) of each hit shown. Search is by
    meaning too, so an unrelated capture may come back: tests look for what must not."""
    page.click("#nav-search")
    page.fill("#search-input", query)
    page.evaluate("window.__lva.searchResults = -1")
    page.click("#search-form button[type=submit]")
    wait_lva(page, "s.searchResults >= 0", 15)
    hits = page.locator("#results li.hit")
    assert hits.count() == lva(page, "searchResults")
    return [
        (
            hit.locator(".session-link").get_attribute("data-session") or "",
            hit.locator(".q").inner_text().removeprefix("You").strip(),
        )
        for hit in hits.all()
    ]


def search_until(page: Any, query: str, hit: tuple[str, str]) -> None:
    """Search until `hit` shows (the search index may trail the captures a little)."""
    deadline = time.monotonic() + 10
    while hit not in (hits := search(page, query)):
        assert time.monotonic() < deadline, f"{query!r} never found {hit}: {hits}"
        time.sleep(0.3)


OCTOPUS = "I learned that octopuses have three hearts and blue blood"
OCTOPUS_2 = "Two of the hearts pump blood through the gills"
OCTOPUS_3 = "The third heart stops while the octopus swims"


def test_history_survives_a_reload_and_a_new_tab(learners: Any, server: Server) -> None:
    me = learners()
    page = me.tab()
    token = token_of(page)
    session_id = lva(page, "sessionId")
    say(page, OCTOPUS)
    say(page, OCTOPUS_2)
    wait_captures(server, token, session_id, 2)

    # A reload: the same learner (localStorage) and session (sessionStorage), with its past.
    page.reload()
    wait_lva(page, "s.connection === 'open' && s.historyLoaded === 2", 15)
    assert token_of(page) == token
    assert lva(page, "sessionId") == session_id
    assert texts(page, "#log .turn.past .user") == [OCTOPUS, OCTOPUS_2]

    # A new tab: the same learner, a session of its own, and the first one in its history.
    tab = me.tab()
    assert token_of(tab) == token
    assert lva(tab, "sessionId") != session_id
    assert tab.locator("#log .turn").count() == 0
    rows = show_history(tab, 1)
    assert rows.count() == 1
    row = rows.first
    assert row.get_attribute("data-session") == session_id
    assert row.locator(".session-open").inner_text() == OCTOPUS
    assert "2 exchanges" in row.locator(".meta").inner_text()

    # Reopen it from the keyboard: the tab switches to it, reconnects, shows its past.
    row.locator(".session-open").focus()
    tab.keyboard.press("Enter")
    wait_lva(
        tab,
        f"s.view === 'talk' && s.sessionId === {session_id!r} && s.connection === 'open'"
        " && s.historyLoaded === 2",
        15,
    )
    assert tab.evaluate(f"sessionStorage.getItem({SESSION_KEY!r})") == session_id
    assert texts(tab, "#log .turn.past .user") == [OCTOPUS, OCTOPUS_2]
    assert tab.inner_text("#session-id") == session_id
    # ... and carries on in it.
    say(tab, OCTOPUS_3)
    captures = wait_captures(server, token, session_id, 3)
    assert [c["user_text"] for c in captures] == [OCTOPUS, OCTOPUS_2, OCTOPUS_3]

    # Every private request carried the token; the WebSocket was opened with it.
    private = [(m, u, a) for m, u, a in me.requests if "/api/" in u and "/api/learners" not in u]
    paths = {u.removeprefix(server.url).split("?")[0] for _m, u, _a in private}
    assert {"/api/sessions", f"/api/sessions/{session_id}/history"} <= paths, private
    assert all(a == f"Bearer {token}" for _m, _u, a in private), private
    assert [u for _m, u, _a in me.requests if u.endswith("/api/learners")] == [
        server.url + "/api/learners"
    ]  # one learner for the whole browser, not one per tab
    assert me.sockets and all(f"?token={token}" in u for u in me.sockets), me.sockets


AXOLOTL = "I learned that axolotls can regrow their legs and even parts of their heart"


def test_another_learner_sees_none_of_it(learners: Any, server: Server) -> None:
    first = learners()
    a = first.tab()
    a_token, a_session = token_of(a), lva(a, "sessionId")
    say(a, AXOLOTL)
    wait_captures(server, a_token, a_session, 1)
    # The first learner's own search finds it (so a search that leaked would too).
    search_until(a, "axolotls regrow legs", (a_session, AXOLOTL))

    other = learners()
    b = other.tab()
    b_token = token_of(b)
    assert b_token != a_token
    rows = show_history(b, 0)
    assert rows.count() == 0
    assert "No sessions yet" in b.inner_text("#history-status")
    assert search(b, "axolotls regrow legs") == []  # b has said nothing yet
    assert "No captures match" in b.inner_text("#search-status")

    # A direct request for the first learner's session, through the page's own client.
    answer = b.evaluate(
        """async (sid) => {
            const { apiFetch } = await import("/static/api.js");
            const r = await apiFetch(`/api/sessions/${sid}/history`);
            return [r.status, (await r.json()).error.code];
        }""",
        a_session,
    )
    assert answer == [404, "session_not_found"]
    assert call(server, "GET", f"/api/sessions/{a_session}/export", b_token)[0] == 404
    assert call(server, "DELETE", f"/api/sessions/{a_session}", b_token)[0] == 404
    status, body = call(
        server, "POST", "/api/search", b_token, {"query": "axolotls", "session_id": a_session}
    )
    assert (status, body["error"]["code"]) == (404, "session_not_found")

    # Pointing the tab at the first learner's session id: refused, and a new one starts.
    b.evaluate(f"sessionStorage.setItem({SESSION_KEY!r}, {a_session!r})")
    b.reload()
    wait_lva(
        b,
        f"s.errors.includes('session_not_found') && s.connection === 'open'"
        f" && s.sessionId !== {a_session!r}",
        15,
    )
    assert b.locator("#log .turn").count() == 0
    assert "axolotl" not in b.inner_text("body").lower()
    assert "A new session has started" in b.inner_text("#notices")

    # The first learner's session is intact.
    assert [c["user_text"] for c in wait_captures(server, a_token, a_session, 1)] == [AXOLOTL]


def test_a_refused_token_is_replaced(learners: Any, server: Server) -> None:
    """A stored token the server refuses (here: not one it signed) is dropped for a new one."""
    me = learners()
    page = me.tab()
    page.evaluate(f"localStorage.setItem({TOKEN_KEY!r}, 'eyJhbGciOiJub25lIn0.e30.c2ln')")
    page.reload()
    wait_lva(page, "s.connection === 'open' && s.learnerChanges >= 1", 15)
    token = token_of(page)
    assert token != "eyJhbGciOiJub25lIn0.e30.c2ln"
    assert call(server, "GET", "/api/me", token)[0] == 200
    say(page, "I learned that a refused credential is replaced")
    wait_captures(server, token, lva(page, "sessionId"), 1)


MOON = "I learned that the Moon drifts away from the Earth a little every year"
VENUS = "Venus spins backwards compared with most of the other planets"
MERCURY = "Mercury has no moons at all"
MOON_QUERY = "Moon drifts away from the Earth"


def test_delete_a_session_and_forget_me(learners: Any, server: Server) -> None:
    me = learners()
    page = me.tab()
    token = token_of(page)
    moon_session = lva(page, "sessionId")
    say(page, MOON)
    wait_captures(server, token, moon_session, 1)
    page.click("#new-session")
    wait_lva(page, f"s.sessionId !== {moon_session!r} && s.connection === 'open'")
    venus_session = lva(page, "sessionId")
    say(page, VENUS)
    wait_captures(server, token, venus_session, 1)

    # Search finds the Moon session (the same search after its deletion must not).
    search_until(page, MOON_QUERY, (moon_session, MOON))

    rows = show_history(page, 2)
    assert [r.get_attribute("data-session") for r in rows.all()] == [venus_session, moon_session]
    moon_row = page.locator(f"#sessions li[data-session='{moon_session}']")

    # Delete asks first; saying no deletes nothing.
    page.once("dialog", lambda d: d.dismiss())
    moon_row.get_by_role("button", name="Delete").click()
    assert lva(page, "sessionsDeleted") == 0
    assert call(server, "GET", f"/api/sessions/{moon_session}/history", token)[0] == 200

    dialogs: list[str] = []
    page.once("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    moon_row.get_by_role("button", name="Delete").click()
    wait_lva(page, "s.sessionsDeleted === 1")
    assert "1 exchange" in dialogs[0] and "cannot be undone" in dialogs[0]
    assert rows.count() == 1 and moon_row.count() == 0
    assert "Deleted" in page.inner_text("#history-status")
    # (A deleted session id stays its owner's, so that nobody else can take it: empty.)
    assert call(server, "GET", f"/api/sessions/{moon_session}/history", token) == (
        200,
        {"session_id": moon_session, "captures": [], "count": 0},
    )
    assert lva(page, "sessionId") == venus_session  # another session: the tab stays put
    hits = search(page, MOON_QUERY)
    assert not [h for h in hits if h[0] == moon_session or "Moon" in h[1]], hits

    # Deleting the tab's own session: the page goes on in a new one.
    page.click("#nav-history")
    wait_lva(page, "s.historySessions === 1")
    page.once("dialog", lambda d: d.accept())
    page.locator(f"#sessions li[data-session='{venus_session}']").get_by_role(
        "button", name="Delete"
    ).click()
    wait_lva(
        page,
        f"s.sessionsDeleted === 2 && s.sessionId !== {venus_session!r} && s.connection === 'open'",
        15,
    )
    assert call(server, "GET", f"/api/sessions/{venus_session}/history", token)[1]["count"] == 0
    page.click("#nav-talk")
    say(page, MERCURY)
    mercury_session = lva(page, "sessionId")
    wait_captures(server, token, mercury_session, 1)

    # Another tab of the same browser is open while the learner is forgotten.
    other_tab = me.tab()
    other_session = lva(other_tab, "sessionId")
    status, before = call(server, "GET", "/api/me", token)
    assert status == 200

    show_history(page, 1)
    page.once("dialog", lambda d: d.accept())
    page.click("#forget-me")
    wait_lva(page, "s.forgotten === 1 && s.connection === 'open'", 15)
    assert "has been deleted" in page.inner_text("#history-status")
    assert page.locator("#sessions li").count() == 0

    # The old token is refused; the page is a new learner with nothing of the old one.
    status, body = call(server, "GET", "/api/me", token)
    assert (status, body["error"]["code"]) == (401, "learner_forgotten")
    assert call(server, "GET", f"/api/sessions/{mercury_session}/history", token)[0] == 401
    new_token = token_of(page)
    assert new_token != token
    status, now = call(server, "GET", "/api/me", new_token)
    assert status == 200 and now["learner_id"] != before["learner_id"]
    assert lva(page, "sessionId") != mercury_session
    page.click("#nav-talk")
    assert page.locator("#log .turn").count() == 0
    say(page, "I learned that forgetting starts a clean slate")
    wait_captures(server, new_token, lva(page, "sessionId"), 1)
    status, mine = call(server, "GET", "/api/sessions", new_token)
    assert status == 200
    assert [s["session_id"] for s in mine["sessions"] if s["captures"]] == [lva(page, "sessionId")]

    # The other tab left its deleted session and joined the new learner too.
    wait_lva(other_tab, f"s.sessionId !== {other_session!r} && s.connection === 'open'", 15)
    assert token_of(other_tab) == new_token
    deadline = time.monotonic() + 10
    while lva(other_tab, "sessionId") not in {
        s["session_id"] for s in call(server, "GET", "/api/sessions", new_token)[1]["sessions"]
    }:
        assert time.monotonic() < deadline, "the other tab's new session is not the new learner's"
        time.sleep(0.2)


def test_exports_download_through_authorised_requests(
    learners: Any, server: Server, tmp_path: Path
) -> None:
    me = learners()
    page = me.tab()
    session_id = lva(page, "sessionId")
    say(page, "I learned that <b>tags</b> in what I say stay text in exports")
    wait_captures(server, token_of(page), session_id, 1)

    with page.expect_download(timeout=10_000) as info:
        page.click("#export-session")
    download = info.value
    assert download.suggested_filename == f"session-{session_id}.md"
    saved = tmp_path / "session.md"
    download.save_as(saved)
    text = saved.read_text()
    assert f"# Learning session {session_id}" in text
    assert "<b>tags</b> in what I say" in text

    show_history(page, 1)
    with page.expect_download(timeout=10_000) as info:
        page.click("#export-all")
    assert info.value.suggested_filename == "my-learning.md"
    info.value.save_as(tmp_path / "all.md")
    assert "<b>tags</b> in what I say" in (tmp_path / "all.md").read_text()
    assert "Downloaded my-learning.md" in page.inner_text("#history-status")
    # The token never went into a URL other than the WebSocket's.
    token = token_of(page)
    assert not [u for _m, u, _a in me.requests if token in u]
