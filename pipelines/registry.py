"""Every provider of every stage, found from the providers' own declarations
(`PROVIDER = ProviderSpec(...)` in each provider file), and the stages built from them.

Adding a provider is its file plus one line in `BUILTIN`; `register(spec)` adds one at
run time. From the declarations come the settings the server reads (`settings()`), the
secrets it hides, the README's provider table, and each stage's chain
(`build_providers`). `local` is the embedded default of each stage (Whisper, the learning
coach, Piper). Modules are imported when the registry is first used; none imports an SDK.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.cloud import ProviderConfig, build_chain
from pipelines.executor import ModelExecutor
from pipelines.ports import SessionObserver
from pipelines.provider_spec import BuildContext, ProviderSpec, Setting, Values
from pipelines.providers import LanguageModel, SpeechToText, TextToSpeech

log = logging.getLogger(__name__)

#: One line per provider file, in the order of the README's provider table.
BUILTIN: tuple[str, ...] = (
    "pipelines.stt.whisper",
    "pipelines.stt.deepgram",
    "pipelines.stt.openai",
    "pipelines.stt.simulated",
    "pipelines.llm.coach",
    "pipelines.llm.anthropic",
    "pipelines.llm.openai",
    "pipelines.llm.simulated",
    "pipelines.tts.piper",
    "pipelines.tts.deepgram",
    "pipelines.tts.openai",
    "pipelines.tts.simulated",
)


class ProviderRegistry:
    """The declared providers by stage and name, and their settings merged by variable
    name (one vendor's providers share a key; two different declarations of one variable
    are an error)."""

    def __init__(self, modules: Iterable[str] = ()) -> None:
        self._modules = tuple(modules)
        self._loaded = False
        self._specs: dict[tuple[str, str], ProviderSpec] = {}

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            for name in self._modules:
                self.register(importlib.import_module(name).PROVIDER)
        except Exception:
            self._loaded = False  # a half-loaded registry would hide the error next time
            self._specs.clear()
            raise

    def register(self, spec: ProviderSpec) -> ProviderSpec:
        self._load()
        if (spec.stage, spec.name) in self._specs:
            raise ValueError(f"{spec.stage} provider {spec.name!r} is already registered")
        known = self.settings()
        for setting in spec.settings.values():
            if known.get(setting.env, setting) != setting:
                raise ValueError(f"{setting.env} is declared differently by {spec.label}")
        self._specs[(spec.stage, spec.name)] = spec
        return spec

    def unregister(self, spec: ProviderSpec) -> None:
        if self._specs.get((spec.stage, spec.name)) is spec:
            del self._specs[(spec.stage, spec.name)]

    def specs(self) -> tuple[ProviderSpec, ...]:
        self._load()
        return tuple(self._specs.values())

    def names(self, stage: str) -> tuple[str, ...]:
        return tuple(sorted(s.name for s in self.specs() if s.stage == stage))

    def get(self, stage: str, name: str) -> ProviderSpec:
        self._load()
        spec = self._specs.get((stage, name))
        if spec is None:
            known = ", ".join(self.names(stage))
            raise ValueError(
                f"{stage.upper()}_PROVIDERS: unknown {stage} provider {name!r}; use one of {known}"
            )
        return spec

    def settings(self) -> dict[str, Setting]:
        """Every declared setting by variable name, in declaration order."""
        return {s.env: s for spec in self.specs() for s in spec.settings.values()}

    def users(self, env: str) -> tuple[str, ...]:
        """The providers that read `env` ("openai llm", ...): the README's "used by"."""
        return tuple(
            spec.label for spec in self.specs() if any(s.env == env for s in spec.settings.values())
        )


REGISTRY = ProviderRegistry(BUILTIN)
register = REGISTRY.register
unregister = REGISTRY.unregister


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """What `build_providers` needs, in the engine's own terms (`server` maps its
    settings onto it, so `pipelines` never imports `server`)."""

    stt_chain: tuple[str, ...] = ("local",)
    llm_chain: tuple[str, ...] = ("local",)
    tts_chain: tuple[str, ...] = ("local",)
    #: Declared settings' values by variable name; a missing one is its default.
    values: Mapping[str, Any] = field(default_factory=dict)
    interim_interval_s: float = 0.7
    #: Timeouts and breakers of the cloud providers and chains.
    cloud: ProviderConfig = field(default_factory=ProviderConfig)


@dataclass(slots=True)
class Providers:
    stt: SpeechToText
    llm: LanguageModel
    tts: TextToSpeech

    async def warm_up(self) -> None:
        """Load embedded models ahead of the first turn (no-op for remote providers)."""
        for provider in (self.stt, self.llm, self.tts):
            warm = getattr(provider, "warm_up", None)
            if warm is not None:
                await warm()

    def status(self) -> dict[str, list[dict[str, object]]]:
        """Circuit-breaker state per provider of each chained stage (for health)."""
        out: dict[str, list[dict[str, object]]] = {}
        for stage, provider in (("stt", self.stt), ("llm", self.llm), ("tts", self.tts)):
            status = getattr(provider, "status", None)
            if status is not None:
                out[stage] = status()
        return out

    async def aclose(self) -> None:
        """Close cloud clients (connection pools) on shutdown."""
        for provider in (self.stt, self.llm, self.tts):
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()


def resolve(spec: ProviderSpec, values: Mapping[str, Any]) -> Values:
    """The spec's settings under its own names: the value given, else the default."""
    return {
        key: values[s.env] if s.env in values else s.read(None) for key, s in spec.settings.items()
    }


def _build(spec: ProviderSpec, values: Mapping[str, Any], ctx: BuildContext) -> Any | None:
    """The provider, or None (with a warning) when a required setting such as its key is
    empty: a chain entry without a key is skipped."""
    resolved = resolve(spec, values)
    missing = spec.missing(resolved)
    if missing is not None:
        log.warning("%s provider %s skipped: no API key", spec.stage, spec.name,
                    extra={"stage": spec.stage, "provider": spec.name,
                           "setting": missing.env})  # fmt: skip
        return None
    return spec.build(resolved, ctx)


def _stage(
    stage: str,
    names: tuple[str, ...],
    cfg: ProviderSettings,
    ctx: BuildContext,
    observer: SessionObserver | None,
) -> Any:
    """The stage's provider: an in-process one named alone as is, or a fallback chain over
    every configured provider that could be built (in the configured order)."""
    specs = [REGISTRY.get(stage, name) for name in names]
    for spec in specs:
        if not spec.chainable and len(specs) > 1:
            raise ValueError(f"{stage.upper()}_PROVIDERS: {spec.name} cannot be chained")
    usable = [p for spec in specs if (p := _build(spec, cfg.values, ctx)) is not None]
    if not usable:
        raise ValueError(f"{stage.upper()}_PROVIDERS={','.join(names)}: no provider has its key")
    if len(specs) == 1 and specs[0].in_process:
        return usable[0]
    return build_chain(stage, usable, ctx.cfg, observer)


def build_providers(
    cfg: ProviderSettings, executor: ModelExecutor, observer: SessionObserver | None = None
) -> Providers:
    ctx = BuildContext(executor, cfg.cloud, cfg.interim_interval_s)
    return Providers(
        stt=_stage("stt", cfg.stt_chain, cfg, ctx, observer),
        llm=_stage("llm", cfg.llm_chain, cfg, ctx, observer),
        tts=_stage("tts", cfg.tts_chain, cfg, ctx, observer),
    )
