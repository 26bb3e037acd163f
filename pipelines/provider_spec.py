"""How a provider declares itself: its name and stage, the environment settings it reads,
and how it is built from them.

Each provider file holds one `PROVIDER = ProviderSpec(...)`. `pipelines.registry`
collects them, and everything else is derived from the declarations: the variables the
server reads and validates at start-up, the secrets hidden from logs, the README's table
of provider settings, and each stage's chain. A provider's SDK is imported only when it
is built, so a server without keys never loads one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pipelines.env_values import http_url, text

if TYPE_CHECKING:
    from pipelines.cloud import ProviderConfig
    from pipelines.executor import ModelExecutor

Stage = Literal["stt", "llm", "tts"]
STAGES: tuple[Stage, ...] = ("stt", "llm", "tts")


@dataclass(frozen=True, slots=True)
class Setting:
    """One environment variable a provider reads. The default is written as it would be
    in the environment, so it goes through the same parser and into the README as is."""

    env: str
    doc: str
    default: str = ""
    #: Hidden in logs, in `Settings.redacted()` and in the admin view.
    secret: bool = False
    #: While this is empty the provider is skipped with a warning (an API key): a chain
    #: such as `anthropic,openai,local` then works with any subset of keys.
    required: bool = False
    #: Raw string -> value; raises ValueError with a message that follows the variable.
    parse: Callable[[str], Any] = text

    def read(self, raw: str | None) -> Any:
        """The value of `raw` (None = unset = the default)."""
        return self.parse(self.default if raw is None else raw)


def api_key(env: str, doc: str) -> Setting:
    """A key that enables its providers: secret, and required."""
    return Setting(env, doc, secret=True, required=True)


def endpoint(env: str, doc: str) -> Setting:
    """A base URL; empty = the provider's public endpoint (set for a proxy or a test)."""
    return Setting(env, doc, parse=http_url)


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a provider may need besides its own settings; the same for every provider."""

    executor: ModelExecutor
    #: Timeouts and breakers shared by every cloud provider and chain.
    cfg: ProviderConfig
    #: How often interim transcripts are produced (the server's INTERIM_INTERVAL_MS).
    interim_interval_s: float = 0.7

    def timeouts(self) -> dict[str, float]:
        """`connect_timeout` and `idle_timeout`, as the cloud clients' constructors take them."""
        return {"connect_timeout": self.cfg.connect_timeout, "idle_timeout": self.cfg.idle_timeout}


#: The resolved settings, by the keys of `ProviderSpec.settings`.
Values = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One provider of one stage.

    `settings` maps a name of the provider's choosing (usually its constructor's keyword)
    to the setting; `build` gets the values under the same names, so most builds are
    `lambda v, ctx: TheProvider(**v, ...)`.
    """

    name: str
    stage: Stage
    build: Callable[[Values, BuildContext], Any]
    settings: Mapping[str, Setting] = field(default_factory=dict)
    #: Runs in this process, no network: named alone in its stage it is used as is,
    #: without a chain's timeouts and breaker around it.
    in_process: bool = False
    #: False for providers that may only ever be alone in their stage (simulated ones).
    chainable: bool = True

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"provider {self.name!r}: stage must be one of {', '.join(STAGES)}")
        if not self.name or self.name != self.name.strip().lower() or "," in self.name:
            raise ValueError(f"provider name {self.name!r}: lower case, no commas or spaces")
        envs = [s.env for s in self.settings.values()]
        if len(set(envs)) != len(envs):
            raise ValueError(f"{self.stage} provider {self.name}: a variable is listed twice")

    @property
    def label(self) -> str:
        return f"{self.name} {self.stage}"

    def missing(self, values: Values) -> Setting | None:
        """The first required setting that is empty: the provider cannot be built."""
        return next((s for k, s in self.settings.items() if s.required and not values[k]), None)


def simulated(stage: Stage, make: Callable[[], Any]) -> ProviderSpec:
    """A `simulated` provider, for load tests and demos only: in process, and never chained
    (its made-up output must not stand in for a real provider's)."""
    return ProviderSpec("simulated", stage, lambda v, ctx: make(), in_process=True, chainable=False)
