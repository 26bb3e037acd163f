"""Property-based HTTP fuzzing of the real server against its own OpenAPI description.

The description is the server's (`GET /openapi.json`, generated from the routes); the
cases are schemathesis's, valid (positive) and invalid (negative) for every operation,
sent to a real server over loopback with a valid learner token and admin key, so the
authorised paths are reached too. Every answer must

- not be a 5xx (`not_a_server_error`),
- have a documented status, content type, headers and body (`status_code_conformance`,
  `content_type_conformance`, `response_headers_conformance`,
  `response_schema_conformance`),

and the server must answer until the end. (Invalid input is not required to be refused
as a whole: unknown query parameters are ignored, as HTTP clients expect; every invalid
value of a described field is a 4xx by the status-code check, its body the error shape.)

Seeded and bounded by a case count and a time limit: the same seed sends the same cases.
A failure does not stop the run; each is kept (operation, check, status, a curl line).

`python -m loadtest.fuzz_http --cases 10000` starts its own server; `--url` uses a running
one (which must have the raised limits of `SERVER_ENV`, the admin key and signature
checks off). `make fuzz` runs this and the WebSocket fuzzer and writes docs/reliability.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: The fuzz server's settings: one client address and one learner send every case, so the
#: per-address and per-learner limits are raised (429 stays documented, it is just rare);
#: the admin key opens the admin API; the webhook's signature check is off (the fuzzer
#: is not Twilio); providers are the instant simulated ones; storage is SQLite.
ADMIN_KEY = "fuzz-admin-key-0123456789abcdef"
SERVER_ENV = {
    "ADMIN_API_KEY": ADMIN_KEY,
    "METRICS_TOKEN": "",
    "REDIS_URL": "",
    "DATABASE_URL": "",
    "STT_PROVIDERS": "simulated",
    "LLM_PROVIDERS": "simulated",
    "TTS_PROVIDERS": "simulated",
    "TWILIO_VALIDATE_SIGNATURE": "false",
    "HTTP_PER_MINUTE_PER_ADDRESS": "10000000",
    "HTTP_PER_MINUTE_PER_LEARNER": "10000000",
    "CONVERSATION_PER_MINUTE": "100000",
    "SEARCH_PER_MINUTE": "100000",
    "ADMIN_MAX_FAILURES": "100000",
    "LOG_LEVEL": "warning",
}
#: Declared types of a JSON body that the server must refuse (415).
WRONG_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")
#: Sessions with captures, so history, export and deletion answer 200 too.
SEEDED_SESSIONS = ("fuzz-a", "fuzz-b", "fuzz_c-1")


@dataclass
class Failure:
    operation: str
    mode: str
    status: int | None
    check: str
    message: str
    curl: str


@dataclass
class HttpFuzzResult:
    seed: int
    cases: int = 0
    operations: int = 0
    seconds: float = 0.0
    by_status: dict[str, int] = field(default_factory=dict)
    #: Operations and modes Hypothesis could not make a case for, and why.
    not_generated: dict[str, str] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in self.by_status.items() if s.startswith("5"))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["server_errors"] = self.server_errors
        return out


class Credentials:
    """A valid learner token and the admin key, for the operations that need them. A
    case that forgets the learner (`DELETE /api/me`) ends its token: a new one is made."""

    def __init__(self, http: Any, base_url: str) -> None:
        self.http = http
        self.base_url = base_url
        self.token = ""
        self.renew()

    def renew(self) -> None:
        resp = self.http.post(f"{self.base_url}/api/learners", timeout=10)
        resp.raise_for_status()
        self.token = resp.json()["learner_token"]
        for sid in SEEDED_SESSIONS:
            resp = self.http.post(
                f"{self.base_url}/api/conversation",
                json={"session_id": sid, "text": f"what is {sid} about"},
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=30,
            )
            resp.raise_for_status()

    def headers_for(self, security: list[dict[str, list[str]]], case_no: int) -> dict:
        """The credential the operation asks for, over whatever the case generated, in
        seven cases of eight; the eighth keeps the generated one (none, or a bad one), so
        the refusals are fuzzed too."""
        if case_no % 8 == 7:
            return {}
        schemes = {name for alt in security for name in alt}
        out: dict[str, str] = {}
        if "learnerToken" in schemes:
            out["Authorization"] = f"Bearer {self.token}"
        if "adminKey" in schemes:
            out["X-Admin-Key"] = ADMIN_KEY
        return out


def _checks() -> list[Any]:
    from schemathesis import checks

    return [
        checks.not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_headers_conformance,
        checks.response_schema_conformance,
    ]


def _failures_of(exc: BaseException) -> Iterator[tuple[str, str]]:
    """(check title, message) of every failure schemathesis raised."""
    inner = getattr(exc, "exceptions", None)
    if inner:
        for one in inner:
            yield from _failures_of(one)
        return
    title = getattr(exc, "title", type(exc).__name__)
    yield str(title), str(exc)[:500]


def run(
    base_url: str,
    *,
    cases: int = 400,
    seed: int = 20261129,
    max_seconds: float = 60.0,
    per_operation: int = 25,
) -> HttpFuzzResult:
    """Fuzz the server at `base_url` until `cases` cases were sent or `max_seconds` passed."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hyp_seed
    from schemathesis import GenerationMode

    spec = requests.get(f"{base_url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(spec)
    operations = [r.ok() for r in schema.get_all_operations()]
    result = HttpFuzzResult(seed=seed, operations=len(operations))
    http = requests.Session()
    creds = Credentials(http, base_url)
    checks = _checks()
    started = time.monotonic()
    deadline = started + max_seconds
    round_no = 0

    def out_of_budget() -> bool:
        return result.cases >= cases or time.monotonic() >= deadline

    def make_one(operation: Any, mode: Any, security: Any, json_body: bool) -> Any:
        def one(case: Any) -> None:
            if out_of_budget():
                return
            headers = creds.headers_for(security, result.cases)
            if json_body and result.cases % 8 == 3:
                # A JSON body declared as something else (a form or text/plain post, which
                # another site's page can send without asking) must be a 415.
                headers["Content-Type"] = WRONG_TYPES[result.cases % len(WRONG_TYPES)]
            result.cases += 1
            label = f"{operation.method.upper()} {operation.path}"
            try:
                response = case.call(base_url=base_url, session=http, headers=headers, timeout=30)
            except Exception as exc:  # no answer at all: the worst failure
                curl = case.as_curl_command(headers=headers)[:2000]
                result.failures.append(
                    Failure(label, mode.value, None, "no answer", repr(exc)[:500], curl)
                )
                return
            status = response.status_code
            result.by_status[str(status)] = result.by_status.get(str(status), 0) + 1
            try:
                case.validate_response(response, checks=checks, headers=headers)
            except (Exception, BaseExceptionGroup) as exc:  # a check failed: keep it, go on
                curl = case.as_curl_command(headers=headers)
                for title, message in _failures_of(exc):
                    result.failures.append(
                        Failure(
                            label,
                            mode.value,
                            status,
                            title,
                            message,
                            curl[:2000],
                        )
                    )
            _after(case, response, http, base_url, creds)

        return one

    while not out_of_budget():
        sent_this_round = result.cases
        for index, operation in enumerate(operations):
            described = spec["paths"][operation.path][operation.method.lower()]
            security = described.get("security", [])
            body = described.get("requestBody", {}).get("content", {})
            json_body = "application/json" in body
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                if out_of_budget():
                    break
                try:
                    strategy = operation.as_strategy(generation_mode=mode)
                except Exception:  # e.g. no way to make this operation's input invalid
                    continue

                one = make_one(operation, mode, security, json_body)
                budget = min(per_operation, max(1, cases - result.cases))
                test = settings(
                    max_examples=budget,
                    deadline=None,
                    database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                    print_blob=False,
                )(
                    hyp_seed(seed + 1000 * round_no + 2 * index + (mode.value == "negative"))(
                        given(strategy)(one)
                    )
                )
                try:
                    test()
                except Exception as exc:  # Hypothesis could not generate this input
                    key = f"{operation.method.upper()} {operation.path} {mode.value}"
                    result.not_generated[key] = f"{type(exc).__name__}: {exc}"[:300]
        round_no += 1
        if result.cases == sent_this_round:
            break  # nothing more to generate
    result.seconds = round(time.monotonic() - started, 1)
    return result


def _after(case: Any, response: Any, http: Any, base_url: str, creds: Credentials) -> None:
    """Undo what one case changed for the cases after it."""
    method, path = case.operation.method.upper(), case.operation.path
    if method == "DELETE" and path == "/api/me" and response.status_code == 200:
        creds.renew()  # the learner was forgotten, and its token with it
    elif method == "POST" and path == "/admin/api/maintenance" and response.status_code == 200:
        # Maintenance on would answer every /api/* case 503: switch it off again.
        http.post(
            f"{base_url}/admin/api/maintenance",
            json={"enabled": False},
            headers={"X-Admin-Key": ADMIN_KEY},
            timeout=10,
        ).raise_for_status()


# --- a server of its own ---------------------------------------------------------------
@contextlib.contextmanager
def fuzz_server(tmp: Path) -> Iterator[str]:
    """The real server (`python -m server`) on loopback, with `SERVER_ENV`; its base URL."""
    from tests.server_process import ServerProcess

    proc = ServerProcess(tmp, env=SERVER_ENV).start()
    try:
        yield proc.http
    finally:
        code = proc.stop()
        if code not in (0, None):
            print(proc.logs()[-4000:], file=sys.stderr)


def server_alive(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/health/ready", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        url = args.url
        if url is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fuzz-http-")))
            url = stack.enter_context(fuzz_server(tmp))
        result = run(url, cases=args.cases, seed=args.seed, max_seconds=args.max_seconds)
        alive = server_alive(url)
    summary = {**result.to_dict(), "server_alive_after": alive}
    text = json.dumps(summary, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text if len(text) < 20_000 else json.dumps({**summary, "failures": "..."}, indent=2))
    return 0 if alive and not result.failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
