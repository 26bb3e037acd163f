"""Anthropic Claude as the language model, streamed through `AsyncAnthropic.messages.stream`.

The SDK's own retries are off (`max_retries=0`): retrying and falling back is the chain's
job, and it must never retry once text reached the user. The stream is read event by
event so that a connection that ends without `message_stop` counts as dropped instead of
passing a half answer off as a whole one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from pipelines import resilience as rz
from pipelines.llm.messages import chat_messages
from pipelines.ports import Exchange
from pipelines.prompts import SYSTEM_PROMPT
from pipelines.provider_spec import ProviderSpec, Setting, api_key, endpoint
from pipelines.recap import recap

DEFAULT_MODEL = "claude-haiku-4-5"

PROVIDER = ProviderSpec(
    name="anthropic",
    stage="llm",
    settings={
        "api_key": api_key("ANTHROPIC_API_KEY", "Enables the anthropic LLM."),
        "model": Setting("ANTHROPIC_MODEL", "Claude model.", default=DEFAULT_MODEL),
        "base_url": endpoint(
            "ANTHROPIC_BASE_URL", "Anthropic endpoint; unset = public API (set for proxies/tests)."
        ),
    },
    build=lambda v, ctx: AnthropicLLM(**v, **ctx.timeouts()),
)


class AnthropicLLM:
    name = "anthropic"

    def __init__(
        self,
        api_key: str,
        *,
        model: str = DEFAULT_MODEL,
        base_url: str = "",
        max_tokens: int = 300,
        connect_timeout: float = 1.5,
        idle_timeout: float = 10.0,
        system_prompt: str = SYSTEM_PROMPT,
    ) -> None:
        self.model = model
        self._max_tokens = max_tokens
        self._system = system_prompt
        import anthropic  # only once the provider is built: a keyless server never loads it

        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url or None,
            max_retries=0,
            timeout=anthropic.Timeout(idle_timeout, connect=connect_timeout),
        )

    async def stream(self, user_text: str, history: Sequence[Exchange]) -> AsyncIterator[str]:
        completed = False
        started = False
        try:
            async with self._client.messages.stream(
                model=self.model,
                max_tokens=self._max_tokens,
                system=self._system,
                messages=chat_messages(history, user_text),  # type: ignore[arg-type]
            ) as events:
                async for event in events:
                    started = True
                    if event.type == "content_block_delta" and event.delta.type == "text_delta":
                        if event.delta.text:
                            yield event.delta.text
                    elif event.type == "message_stop":
                        completed = True
        except Exception as exc:
            raise rz.classify_exception(self.name, exc, started=started) from None
        if not completed:
            raise rz.fault(self.name, rz.DROPPED, "stream ended before message_stop")

    def recap(self, history: Sequence[Exchange]) -> str:
        return recap(history)  # offline: a hang-up never waits on the API

    async def aclose(self) -> None:
        await self._client.close()
