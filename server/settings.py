"""Settings from environment variables, validated once at start-up.

Every server setting is a dataclass field whose metadata names its environment variable
and says what it does. The providers' own settings (keys, models, endpoints, the embedded
models' paths) are declared by each provider (`pipelines.provider_spec`) and read into
`Settings.providers`. `README.md` documents each variable (a test keeps the two in step;
`scripts/config_table.py` writes the tables). A bad value stops the server at start-up
with a message naming the variable, never later.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from types import MappingProxyType
from typing import Any

from admin.auth import MIN_KEY_CHARS
from pipelines.env_values import boolean as _bool
from pipelines.env_values import choice as _choice
from pipelines.env_values import float_between as _float
from pipelines.env_values import int_between as _int
from pipelines.env_values import text as _text
from pipelines.provider_spec import Setting
from pipelines.registry import REGISTRY
from server.env_field import env_field as _env
from server.limits.settings import LimitSettings
from server.redaction import looks_like_url, redact_url


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


def _chain(raw: str) -> tuple[str, ...]:
    items = tuple(p.strip().lower() for p in raw.split(",") if p.strip())
    if not items:
        raise ValueError("must name at least one provider")
    return items


def _ice_urls(raw: str) -> tuple[str, ...]:
    urls = tuple(p.strip() for p in raw.split(",") if p.strip())
    for url in urls:
        if not url.startswith(("stun:", "turn:", "turns:")):
            raise ValueError(f"{url!r} is not a stun:, turn: or turns: URL")
    return urls


def _otlp_url(raw: str) -> str:
    url = raw.strip().rstrip("/")
    if url and not url.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL (OTLP over HTTP)")
    return url


@dataclass(frozen=True, slots=True)
class Settings(LimitSettings):
    """The server's settings; the limits section (server/limits/settings.py) is inherited."""

    # --- process ---------------------------------------------------------------------
    host: str = _env("HOST", "Interface to listen on (`--host` overrides).", default="127.0.0.1")
    port: int = _env("PORT", "TCP port (`--port` overrides).", _int(1, 65535), default=8080)
    log_level: str = _env(
        "LOG_LEVEL",
        "debug, info, warning or error.",
        _choice("debug", "info", "warning", "error"),
        default="info",
    )
    log_format: str = _env(
        "LOG_FORMAT",
        "`json` (one event a line) or `text` (for a terminal).",
        _choice("json", "text"),
        default="json",
    )
    executor_workers: int = _env(
        "EXECUTOR_WORKERS",
        "Threads for CPU-heavy model work (Whisper, Piper), shared fairly by the sessions.",
        _int(1, 64),
        default=2,
    )
    max_sessions: int = _env(
        "MAX_SESSIONS",
        "Concurrent voice sessions per process; more get close code 4503.",
        _int(1, 100000),
        default=1000,
    )
    # --- state -----------------------------------------------------------------------
    session_ttl_seconds: int = _env(
        "SESSION_TTL_SECONDS",
        "Idle time after which a session is forgotten.",
        _int(10, 2592000),
        default=1800,
    )
    context_max_exchanges: int = _env(
        "CONTEXT_MAX_EXCHANGES",
        "Recent exchanges kept as conversation context.",
        _int(1, 200),
        default=10,
    )
    redis_url: str = _env("REDIS_URL", "Redis for sessions; unset = in-memory.", default="")
    database_url: str = _env(
        "DATABASE_URL", "Postgres for captures (postgresql://...); unset = SQLite.", default=""
    )
    database_path: str = _env(
        "DATABASE_PATH",
        "SQLite captures file (when DATABASE_URL is unset).",
        default="learning_captures.db",
    )
    capture_batch_size: int = _env(
        "CAPTURE_BATCH_SIZE", "Captures written per batch.", _int(1, 10000), default=100
    )
    capture_flush_ms: int = _env(
        "CAPTURE_FLUSH_MS",
        "Longest a capture waits before its batch is written.",
        _int(1, 60000),
        default=200,
    )
    capture_queue_max: int = _env(
        "CAPTURE_QUEUE_MAX",
        "Captures held in memory before spilling to the journal.",
        _int(1, 1000000),
        default=10000,
    )
    capture_journal_dir: str = _env(
        "CAPTURE_JOURNAL_DIR",
        "Disk journal for captures the database cannot take yet; empty = `journal/` beside "
        "DATABASE_PATH.",
        default="",
    )
    capture_journal_max_mb: int = _env(
        "CAPTURE_JOURNAL_MAX_MB",
        "Disk the capture journal may use; past it new captures are dropped (logged).",
        _int(1, 1000000),
        default=512,
    )
    redis_key_prefix: str = _env(
        "REDIS_KEY_PREFIX",
        "Prefix before `session:` in Redis keys (empty = keys are literally `session:*`).",
        default="",
    )
    embedder: str = _env(
        "EMBEDDER",
        "Search by meaning: `static` (bundled MiniLM distillation, offline), `openai` "
        "(text-embedding-3-small, needs OPENAI_API_KEY) or `none` (keyword only).",
        _choice("static", "openai", "none"),
        default="static",
    )
    search_cache_seconds: float = _env(
        "SEARCH_CACHE_SECONDS",
        "How long a search result may be reused (local writes invalidate it at once); 0 = off.",
        _float(0, 3600),
        default=5.0,
    )
    database_pool_max: int = _env(
        "DATABASE_POOL_MAX", "Postgres connections per process.", _int(1, 100), default=10
    )
    # --- voice -----------------------------------------------------------------------
    stt_providers: tuple[str, ...] = _env(
        "STT_PROVIDERS", "Speech-to-text chain, first usable wins.", _chain, default=("local",)
    )
    llm_providers: tuple[str, ...] = _env(
        "LLM_PROVIDERS", "Language-model chain.", _chain, default=("local",)
    )
    tts_providers: tuple[str, ...] = _env(
        "TTS_PROVIDERS", "Text-to-speech chain.", _chain, default=("local",)
    )
    vad_aggressiveness: int = _env(
        "VAD_AGGRESSIVENESS", "webrtcvad mode 0 (lenient) .. 3 (strict).", _int(0, 3), default=2
    )
    endpoint_silence_ms: int = _env(
        "ENDPOINT_SILENCE_MS",
        "Silence that ends a turn in continuous mode whose transcript reads neither as "
        "finished nor as trailing off (no final punctuation: often a pause mid-sentence).",
        _int(100, 5000),
        default=700,
    )
    speech_start_ms: int = _env(
        "SPEECH_START_MS",
        "Voiced audio (in a 300 ms window) that starts speech.",
        _int(20, 1000),
        default=120,
    )
    preroll_ms: int = _env(
        "PREROLL_MS",
        "Audio before speech start handed to the recognizer.",
        _int(0, 2000),
        default=300,
    )
    interim_interval_ms: int = _env(
        "INTERIM_INTERVAL_MS",
        "How often interim transcripts are produced while speaking.",
        _int(100, 5000),
        default=900,
    )
    max_utterance_seconds: int = _env(
        "MAX_UTTERANCE_SECONDS",
        "A turn longer than this is ended by force.",
        _int(2, 600),
        default=30,
    )
    # --- turn-taking (continuous mode, pipelines/turns.py) ----------------------------
    end_silence_finished_ms: int = _env(
        "END_SILENCE_FINISHED_MS",
        "Silence that ends a turn whose transcript reads as a finished sentence.",
        _int(100, 5000),
        default=350,
    )
    end_silence_unfinished_ms: int = _env(
        "END_SILENCE_UNFINISHED_MS",
        "Silence that ends a turn trailing off (and, so, because, um, the...).",
        _int(100, 5000),
        default=1600,
    )
    speculate_after_ms: int = _env(
        "SPECULATE_AFTER_MS",
        "Pause after which the transcript (and a held, speculative reply) is started.",
        _int(20, 5000),
        default=200,
    )
    speculative_reply: bool = _env(
        "SPECULATIVE_REPLY",
        "Start the reply during the pause; release it if the turn ends as transcribed.",
        _bool,
        default=True,
    )
    barge_in_min_speech_ms: int = _env(
        "BARGE_IN_MIN_SPEECH_MS",
        "Voiced speech over the agent before its words can confirm an interruption.",
        _int(20, 5000),
        default=200,
    )
    barge_in_pause_ms: int = _env(
        "BARGE_IN_PAUSE_MS",
        "Voiced speech over the agent after which its audio pauses where it is (until then "
        "it is only ducked); it resumes from there if the speech was not an interruption.",
        _int(20, 10000),
        default=1000,
    )
    barge_in_duck: bool = _env(
        "BARGE_IN_DUCK",
        "Duck the agent's audio from the first frame of speech over it (protocol v1.1 "
        "`duck`); back to full volume when the caller stops for DUCK_RELEASE_MS.",
        _bool,
        default=True,
    )
    barge_in_duck_db: float = _env(
        "BARGE_IN_DUCK_DB",
        "How much quieter a ducked reply plays, in dB.",
        _float(6.0, 60.0),
        default=24.0,
    )
    duck_release_ms: int = _env(
        "DUCK_RELEASE_MS",
        "Silence in speech over the agent after which a ducked reply is loud again.",
        _int(20, 5000),
        default=300,
    )
    barge_in_interim_ms: int = _env(
        "BARGE_IN_INTERIM_MS",
        "How often speech over the agent is transcribed while it may be an interruption "
        "(words of intent confirm it); 0 = at INTERIM_INTERVAL_MS like any speech.",
        _int(0, 5000),
        default=200,
    )
    barge_in_confirm_ms: int = _env(
        "BARGE_IN_CONFIRM_MS",
        "Voiced speech over the agent that interrupts without a transcript (unless a backchannel).",
        _int(20, 10000),
        default=1200,
    )
    barge_in_min_words: int = _env(
        "BARGE_IN_MIN_WORDS",
        "Words (not backchannels, filler or echo) that confirm an interruption; a word of "
        "intent (stop, wait, what, repeat...) always does.",
        _int(1, 20),
        default=3,
    )
    barge_in_pause: bool = _env(
        "BARGE_IN_PAUSE",
        "Pause the agent's audio once speech over it lasts BARGE_IN_PAUSE_MS (resumes if "
        "it was not an interruption).",
        _bool,
        default=True,
    )
    backchannel_words: tuple[str, ...] = _env(
        "BACKCHANNEL_WORDS",
        "Comma-separated words that never interrupt the agent; empty = the built-in list "
        "(mhm, uh-huh, yeah, ok, right, ...).",
        lambda raw: tuple(w.strip().lower() for w in raw.split(",") if w.strip()),
        default=(),
    )
    echo_vad_aggressiveness: int = _env(
        "ECHO_VAD_AGGRESSIVENESS",
        "Phone calls: webrtcvad mode while the agent's audio plays (its echo must not barge in).",
        _int(0, 3),
        default=3,
    )
    echo_gate_dbfs: float = _env(
        "ECHO_GATE_DBFS",
        "Phone calls: while the agent plays, frames quieter than this do not count as "
        "caller speech.",
        _float(-96.0, 0.0),
        default=-45.0,
    )
    # --- phone (Twilio Media Streams) ----------------------------------------------
    twilio_auth_token: str = _env(
        "TWILIO_AUTH_TOKEN", "Checks X-Twilio-Signature on /twilio/* requests.", default=""
    )
    twilio_validate_signature: bool = _env(
        "TWILIO_VALIDATE_SIGNATURE",
        "Reject unsigned /twilio/* requests (403); `false` only for local testing.",
        _bool,
        default=True,
    )
    public_url: str = _env(
        "PUBLIC_URL",
        "The server's public https URL as Twilio sees it (for signatures and the stream "
        "URL); required with TWILIO_AUTH_TOKEN unless HOST is loopback; empty = the "
        "request's own scheme and Host (forwarded headers are not trusted).",
        default="",
    )
    twilio_stream_token_ttl_seconds: int = _env(
        "TWILIO_STREAM_TOKEN_TTL_SECONDS",
        "Lifetime of the one-use token /twilio/voice gives each call's stream (Twilio opens "
        "the stream at once).",
        _int(5, 3600),
        default=60,
    )
    # --- providers -------------------------------------------------------------------
    #: Every provider-declared setting by variable name (ANTHROPIC_API_KEY, OPENAI_MODEL,
    #: WHISPER_MODEL, ...), parsed; unset ones hold their declared default.
    providers: Mapping[str, Any] = field(default_factory=dict)
    provider_connect_timeout_ms: int = _env(
        "PROVIDER_CONNECT_TIMEOUT_MS",
        "Connecting to a cloud provider.",
        _int(50, 60000),
        default=1500,
    )
    provider_first_byte_timeout_ms: int = _env(
        "PROVIDER_FIRST_BYTE_TIMEOUT_MS",
        "Request -> first token/audio, or end of speech -> final transcript, per provider.",
        _int(50, 60000),
        default=2500,
    )
    provider_retries: int = _env(
        "PROVIDER_RETRIES",
        "Retries on one provider (before any output) before the next.",
        _int(0, 5),
        default=1,
    )
    breaker_failures: int = _env(
        "BREAKER_FAILURES",
        "Consecutive failures that open a provider's circuit breaker.",
        _int(1, 1000),
        default=3,
    )
    breaker_cooldown_s: float = _env(
        "BREAKER_COOLDOWN_S",
        "Seconds an open breaker waits before one probe call.",
        _float(0.1, 3600),
        default=30.0,
    )
    # --- learners (docs/security.md) --------------------------------------------------
    auth_secret: str = _env(
        "AUTH_SECRET",
        "Signs learner tokens and keys callers' number hashes (32+ chars; the same on every "
        "instance); unset = generated once into AUTH_SECRET_FILE.",
        default="",
    )
    auth_secret_file: str = _env(
        "AUTH_SECRET_FILE",
        "Where the generated secret is kept when AUTH_SECRET is unset; empty = `auth_secret` "
        "beside DATABASE_PATH.",
        default="",
    )
    learner_token_ttl_days: int = _env(
        "LEARNER_TOKEN_TTL_DAYS",
        "Lifetime of a learner token the server issues (renewed on every voice connection).",
        _int(1, 3650),
        default=180,
    )
    oidc_issuer: str = _env(
        "OIDC_ISSUER",
        "Accept bearer tokens from this identity provider (`iss`); needs OIDC_AUDIENCE and "
        "OIDC_JWKS_URL.",
        default="",
    )
    oidc_audience: str = _env(
        "OIDC_AUDIENCE", "The `aud` the provider's tokens must carry for this server.", default=""
    )
    oidc_jwks_url: str = _env(
        "OIDC_JWKS_URL", "The provider's signing keys (https, or http on loopback).", default=""
    )
    capture_retention_days: int = _env(
        "CAPTURE_RETENTION_DAYS",
        "Captures older than this are deleted in the background (hourly); 0 = kept forever.",
        _int(0, 36500),
        default=0,
    )
    # --- traces (docs/runbook.md#traces) ----------------------------------------------
    otel_exporter_otlp_endpoint: str = _env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OpenTelemetry collector, OTLP over HTTP (e.g. `http://collector:4318`; spans go to "
        "`/v1/traces`): a trace of every voice turn; unset = no tracing, nothing loaded.",
        _otlp_url,
        default="",
    )
    otel_service_name: str = _env(
        "OTEL_SERVICE_NAME",
        "`service.name` of the exported traces.",
        default="learning-voice-agent",
    )
    # --- WebRTC (server/transports/webrtc.py) -------------------------------------------
    webrtc_ice_servers: tuple[str, ...] = _env(
        "WEBRTC_ICE_SERVERS",
        "STUN/TURN servers for WebRTC, comma-separated `stun:`, `turn:` or `turns:` URLs, used "
        "by the server and handed to the browser in the answer; empty = host candidates only "
        "(one host or one LAN). Behind NAT: docs/web-client.md#webrtc-behind-nat.",
        _ice_urls,
        default=(),
    )
    webrtc_turn_username: str = _env(
        "WEBRTC_TURN_USERNAME",
        "Username for the `turn:` servers in WEBRTC_ICE_SERVERS.",
        default="",
    )
    webrtc_turn_password: str = _env(
        "WEBRTC_TURN_PASSWORD",
        "Password for the `turn:` servers (handed to browsers with the answer, never logged).",
        default="",
    )
    # --- admin -----------------------------------------------------------------------
    admin_api_key: str = _env(
        "ADMIN_API_KEY", "Key for /admin (header X-Admin-Key); unset = admin closed.", default=""
    )
    metrics_token: str = _env(
        "METRICS_TOKEN",
        "Bearer token required by GET /metrics (Authorization: Bearer ...); unset = open.",
        default="",
    )

    def __post_init__(self) -> None:
        for name, value in (
            ("ADMIN_API_KEY", self.admin_api_key),
            ("METRICS_TOKEN", self.metrics_token),
        ):
            if value and len(value) < MIN_KEY_CHARS:
                raise ConfigError(
                    f"{name}: must be at least {MIN_KEY_CHARS} characters (a random one: "
                    "`openssl rand -hex 24`)"
                )
        declared = declared_settings()
        unknown = sorted(self.providers.keys() - declared.keys())
        if unknown:
            raise ConfigError(f"{', '.join(unknown)}: no provider declares it")
        complete = {name: s.read(None) for name, s in declared.items()} | dict(self.providers)
        object.__setattr__(self, "providers", MappingProxyType(complete))
        self._check_public_url()

    def _check_public_url(self) -> None:
        """Twilio signs the URL it called. Without PUBLIC_URL that URL would be rebuilt
        from what the caller sent (Host, scheme), so a server reachable from outside must
        say what its public URL is once phone calls are configured."""
        phone = self.twilio_validate_signature and self.twilio_auth_token
        if phone and not self.public_url and not is_loopback(self.host):
            raise ConfigError(
                f"PUBLIC_URL must be set (the https URL Twilio calls) when TWILIO_AUTH_TOKEN "
                f"is set and HOST={self.host!r} is not loopback"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in _server_fields():
            name = f.metadata["env"]
            raw = env.get(name)
            if raw is not None:
                values[f.name] = _read(name, raw, f.metadata["parse"] or _text)
        values["providers"] = {
            name: _read(name, env.get(name), s.read) for name, s in declared_settings().items()
        }
        values.update(overrides)
        return cls(**values)

    def redacted(self) -> dict[str, Any]:
        """For logs and admin: every secret replaced by whether it is set, and the
        credentials inside every URL (server's and providers': REDIS_URL, DATABASE_URL,
        PUBLIC_URL, *_BASE_URL, ...) replaced by `***`."""
        out: dict[str, Any] = {}
        for f in _server_fields():
            value = getattr(self, f.name)
            if is_secret(f.metadata["env"]):
                value = "set" if value else ""
            out[f.metadata["env"]] = _without_url_credentials(value)
        for name, value in self.providers.items():
            if self._secret(name):
                value = "set" if value else ""
            out[name] = _without_url_credentials(value)
        return out

    def secrets(self) -> list[str]:
        """The value of every secret that is set, server's and providers' (for logs)."""
        server = [getattr(self, f.name) for f in _server_fields() if is_secret(f.metadata["env"])]
        declared = [v for name, v in self.providers.items() if self._secret(name)]
        return [v for v in server + declared if v and isinstance(v, str)]

    @staticmethod
    def _secret(name: str) -> bool:
        """Declared secret, named like one, or no longer declared (when in doubt, hide)."""
        setting = REGISTRY.settings().get(name)
        return setting is None or setting.secret or is_secret(name)


def _server_fields() -> list[Field[Any]]:
    """The server's own settings: every field but `providers`."""
    own = [f for f in fields(Settings) if "env" in f.metadata]
    limits = {f.name for f in fields(LimitSettings)}
    return sorted(own, key=lambda f: f.name in limits)  # the limits section last


def declared_settings() -> dict[str, Setting]:
    """The settings the providers declare (`pipelines.registry`), by variable name."""
    declared = REGISTRY.settings()
    clash = sorted(declared.keys() & {f.metadata["env"] for f in _server_fields()})
    if clash:
        raise ConfigError(f"{', '.join(clash)}: declared by a provider and by the server")
    return declared


def _read(name: str, raw: str | None, parse: Callable[[str | None], Any]) -> Any:
    try:
        return parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r}: {exc}") from None


def is_loopback(host: str) -> bool:
    """127.0.0.1, ::1, localhost (and the rest of 127.0.0.0/8): reachable from this host only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def is_secret(env_name: str) -> bool:
    return env_name.endswith(("_KEY", "_TOKEN", "_SECRET", "_PASSWORD"))


def _without_url_credentials(value: Any) -> Any:
    """A setting's value with `redact_url` applied to every URL in it (a string, or a
    tuple of strings such as ALLOWED_ORIGINS); other values as they are."""
    if isinstance(value, str):
        return redact_url(value) if looks_like_url(value) else value
    if isinstance(value, tuple):
        return tuple(_without_url_credentials(v) for v in value)
    return value


def server_env_docs() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every server setting."""
    rows = []
    for f in _server_fields():
        default = f.default
        if isinstance(default, tuple):
            default = ",".join(default)
        rows.append((f.metadata["env"], str(default), f.metadata["doc"]))
    return rows


def provider_env_docs() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every provider-declared setting."""
    return [(name, s.default, s.doc) for name, s in declared_settings().items()]


def env_docs() -> list[tuple[str, str, str]]:
    """Every variable the server reads: the README tables' source."""
    return server_env_docs() + provider_env_docs()
