"""How much time the cloud provider adapters (and their chains) add to a voice turn.

Every stage runs through its real adapter and chain against the loopback fake servers of
`tests/fakes`, with the fakes' own delays fixed (Deepgram answers a Finalize after
`--stt-delay`, the LLM's first token comes after `--llm-first` and the next ones every
`--llm-gap`, TTS audio after `--tts-first`). Whatever is measured beyond those delays is
overhead: the SDK, our adapter and chain, JSON/SSE parsing and the loopback hop (an upper
bound for the adapters alone: the fakes' own work is in it too).

Per turn, on the critical path from end of speech to first reply audio:

    stt_final    finalize() -> final transcript           minus the Finalize delay
    llm_first    stream() -> first token                  minus the first-token delay
    tts_first    synthesize() -> first audio chunk        minus the first-audio delay
    turn         the sum of the three
    llm_stream   the whole reply stream                   minus every configured delay

and, as a baseline, the same LLM and TTS requests made with a bare `httpx` client
(`raw_llm_first`, `raw_tts_first`): the difference is what the SDKs, adapters and chains
add over the loopback HTTP round trip itself.

    .venv/bin/python -m loadtest.bench_providers --turns 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import time
from typing import Any

import httpx

from pipelines.chain import ChainPolicy, LLMChain, STTChain, TTSChain
from pipelines.llm.anthropic import AnthropicLLM
from pipelines.stt.deepgram import DeepgramSTT
from pipelines.tts.deepgram import DeepgramTTS
from tests.fakes import speechcodec
from tests.fakes.anthropic import FakeAnthropic, tokens
from tests.fakes.deepgram import FakeDeepgram

UTTERANCE = "spaced repetition helps memory because retrieval strengthens recall"
REPLY = "That is a great point about memory. Why do you think spacing the reviews helps?"
FRAME = 640


async def raw_requests(
    raw: httpx.AsyncClient, an_url: str, an_key: str, dg_url: str, dg_key: str
) -> tuple[float, float]:
    """Seconds to the first text delta and to the first audio bytes, with bare httpx."""
    body = {
        "model": "m",
        "max_tokens": 300,
        "stream": True,
        "messages": [{"role": "user", "content": UTTERANCE}],
    }
    t0 = time.perf_counter()
    async with raw.stream(
        "POST", an_url + "/v1/messages", json=body, headers={"x-api-key": an_key}
    ) as r:
        first = 0.0
        async for line in r.aiter_lines():  # read it all, so the connection is reused
            if not first and line.startswith("data:") and "text_delta" in line:
                first = time.perf_counter()
    t1 = time.perf_counter()
    async with raw.stream(
        "POST",
        dg_url + "/v1/speak",
        json={"text": "That is a great point."},
        params={
            "model": "aura-2-thalia-en",
            "encoding": "linear16",
            "container": "none",
            "sample_rate": 24000,
        },
        headers={"Authorization": "Token " + dg_key},
    ) as r:
        audio = 0.0
        async for _ in r.aiter_bytes():
            audio = audio or time.perf_counter()
    return first - t0, audio - t1


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _serve(conn: Any, args: argparse.Namespace) -> None:
    async with FakeDeepgram() as dg, FakeAnthropic() as an:
        dg.finalize_delay = args.stt_delay
        dg.first_delay = args.tts_first
        an.first_delay = args.llm_first
        an.chunk_delay = args.llm_gap
        an.reply = lambda body: REPLY
        conn.send((dg.base_url, dg.api_key, an.base_url, an.api_key))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop


def serve_fakes(conn: Any, args: argparse.Namespace) -> None:
    """The fakes run in their own process, so their work is not counted as ours."""
    asyncio.run(_serve(conn, args))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    policy = ChainPolicy(first_byte_timeout=5, idle_timeout=5, finalize_timeout=5)
    stages = ("stt_final", "llm_first", "tts_first", "turn", "llm_stream")
    samples: dict[str, list[float]] = {k: [] for k in (*stages, "raw_llm_first", "raw_tts_first")}
    parent, child = multiprocessing.Pipe()
    fakes = multiprocessing.get_context("spawn").Process(target=serve_fakes, args=(child, args))
    fakes.start()
    try:
        dg_url, dg_key, an_url, an_key = await asyncio.to_thread(parent.recv)
        n_tokens = len(tokens(REPLY))
        stt = STTChain([DeepgramSTT(dg_key, base_url=dg_url)], policy)
        llm = LLMChain([AnthropicLLM(an_key, base_url=an_url)], policy)
        tts = TTSChain([DeepgramTTS(dg_key, base_url=dg_url)], policy)
        stream = await stt.open(lambda _: None)
        raw = httpx.AsyncClient(timeout=10)
        audio = speechcodec.encode(UTTERANCE)
        for turn in range(args.turns + args.warmup):
            for i in range(0, len(audio), FRAME):
                stream.push(audio[i : i + FRAME])
            await asyncio.sleep(0.05)  # let the frames reach the fake before the turn ends

            t0 = time.perf_counter()
            text = await stream.finalize()
            t1 = time.perf_counter()
            assert text == UTTERANCE, text
            agen = llm.stream(text, [])
            first = await anext(agen)
            t2 = time.perf_counter()
            rest = [d async for d in agen]
            t3 = time.perf_counter()
            assert first + "".join(rest) == REPLY
            sgen = tts.synthesize(REPLY.split(".")[0] + ".")
            await anext(sgen)
            t4 = time.perf_counter()
            await sgen.aclose()
            if turn < args.warmup:
                continue
            stt_o = t1 - t0 - args.stt_delay
            llm_o = t2 - t1 - args.llm_first
            tts_o = t4 - t3 - args.tts_first
            samples["stt_final"].append(stt_o)
            samples["llm_first"].append(llm_o)
            samples["tts_first"].append(tts_o)
            samples["turn"].append(stt_o + llm_o + tts_o)
            expected = args.llm_first + (n_tokens - 1) * args.llm_gap
            samples["llm_stream"].append(t3 - t1 - expected)
            raw_llm, raw_tts = await raw_requests(raw, an_url, an_key, dg_url, dg_key)
            samples["raw_llm_first"].append(raw_llm - args.llm_first)
            samples["raw_tts_first"].append(raw_tts - args.tts_first)
        await stream.aclose()
        await raw.aclose()
        for chain in (stt, llm, tts):
            await chain.aclose()
    finally:
        parent.send("stop")
        await asyncio.to_thread(fakes.join, 10)
    return {
        stage: {
            "p50_ms": round(pct(v, 0.50) * 1000, 2),
            "p95_ms": round(pct(v, 0.95) * 1000, 2),
            "mean_ms": round(statistics.fmean(v) * 1000, 2),
        }
        for stage, v in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--stt-delay", type=float, default=0.05)
    parser.add_argument("--llm-first", type=float, default=0.15)
    parser.add_argument("--llm-gap", type=float, default=0.005)
    parser.add_argument("--tts-first", type=float, default=0.08)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
        return
    print(f"adapter + chain overhead per turn ({args.turns} turns, beyond the fakes' delays)")
    print(f"{'stage':<12}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}")
    for stage, r in result.items():
        print(f"{stage:<12}{r['p50_ms']:>10.2f}{r['p95_ms']:>10.2f}{r['mean_ms']:>10.2f}")


if __name__ == "__main__":
    main()
