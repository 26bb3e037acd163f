"""OpenAI chat completions as the language model, streamed (`stream=True`).

SDK retries are off for the same reason as for Anthropic. A stream that ends without a
`finish_reason` (the connection closed before `data: [DONE]`) counts as dropped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from pipelines import resilience as rz
from pipelines.llm.messages import chat_messages
from pipelines.ports import Exchange
from pipelines.prompts import SYSTEM_PROMPT
from pipelines.provider_spec import ProviderSpec, Setting
from pipelines.recap import recap
from pipelines.vendors import OPENAI, openai_client

DEFAULT_MODEL = "gpt-4o-mini"

PROVIDER = ProviderSpec(
    name="openai",
    stage="llm",
    settings={
        **OPENAI,
        "model": Setting("OPENAI_MODEL", "OpenAI chat model.", default=DEFAULT_MODEL),
    },
    build=lambda v, ctx: OpenAILLM(**v, **ctx.timeouts()),
)


class OpenAILLM:
    name = "openai"

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
        self._client = openai_client(api_key, base_url, connect_timeout, idle_timeout)

    async def stream(self, user_text: str, history: Sequence[Exchange]) -> AsyncIterator[str]:
        messages = [{"role": "system", "content": self._system}]
        messages += chat_messages(history, user_text)
        finished = False
        started = False
        try:
            chunks = await self._client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                max_completion_tokens=self._max_tokens,
                stream=True,
            )
            async with chunks:
                async for chunk in chunks:
                    started = True
                    for choice in chunk.choices:
                        if choice.delta is not None and choice.delta.content:
                            yield choice.delta.content
                        if choice.finish_reason:
                            finished = True
        except Exception as exc:
            raise rz.classify_exception(self.name, exc, started=started) from None
        if not finished:
            raise rz.fault(self.name, rz.DROPPED, "stream ended without finish_reason")

    def recap(self, history: Sequence[Exchange]) -> str:
        return recap(history)  # offline: a hang-up never waits on the API

    async def aclose(self) -> None:
        await self._client.close()
