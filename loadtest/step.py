"""One step of the ramp: N callers connect, talk for a while in real time, and hang up.

Timeline: connect (a bounded number at a time) -> warm-up (every caller's first, partial
turn is not counted) -> measurement window (turns whose speech ends inside it are counted,
server CPU and memory are read at its edges) -> drain (callers keep streaming so the last
turns get their replies) -> close. Every phase has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from dataclasses import dataclass

from loadtest.caller import Caller
from loadtest.pacer import Pacer
from loadtest.probe import Sample, ServerProbe, self_sample
from loadtest.script import Script
from loadtest.summary import summarize


@dataclass(frozen=True, slots=True)
class StepPlan:
    callers: int
    measure_s: float
    warmup_s: float
    drain_s: float = 2.5
    connect_concurrency: int = 50
    connect_timeout_s: float = 10.0


async def run_step(
    plan: StepPlan,
    script: Script,
    host: str,
    port: int,
    *,
    tag: str,
    probe: ServerProbe | None = None,
    baseline_rss: int | None = None,
    floor_s: float = 0.75,
    seed: int = 0,
) -> dict:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    pacer = Pacer()
    pacer_task = loop.create_task(pacer.run())
    callers: list[Caller] = []
    gate = asyncio.Semaphore(plan.connect_concurrency)
    connect_failures: dict[str, int] = {}

    async def connect(i: int) -> None:
        async with gate:
            first = rng.randrange(script.cycle)  # callers' turns out of step
            caller = None
            try:
                async with asyncio.timeout(plan.connect_timeout_s):
                    _, caller = await loop.create_connection(
                        lambda: Caller(script, host, port, f"load-{tag}-{i}", first), host, port
                    )
                    await caller.ready
            except (OSError, TimeoutError, ConnectionError) as exc:
                kind = type(exc).__name__
                connect_failures[kind] = connect_failures.get(kind, 0) + 1
                if caller is not None:
                    caller.close()
                return
            callers.append(caller)
            pacer.add(caller)

    try:
        t_connect = time.monotonic()
        await asyncio.gather(*(connect(i) for i in range(plan.callers)))
        connect_s = time.monotonic() - t_connect
        await asyncio.sleep(plan.warmup_s)
        pacer.reset_stats()
        for c in callers:
            c.record = True
        before: Sample | None = probe.sample() if probe else None
        me_before = self_sample()
        await asyncio.sleep(plan.measure_s)
        after: Sample | None = probe.sample() if probe else None
        me_after = self_sample()
        loadavg = os.getloadavg()[0]
        for c in callers:
            c.record = False
        await asyncio.sleep(plan.drain_s)
        lateness = pacer.lateness
    finally:
        pacer.stop()
        await pacer_task
        for c in callers:
            c.close()
        if callers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await asyncio.gather(*(c.closed for c in callers))
    result = summarize(
        plan=plan,
        script=script,
        tallies=[c.tally for c in callers],
        connect_failures=connect_failures,
        connect_s=connect_s,
        server=(before, after),
        me=(me_before, me_after),
        baseline_rss=baseline_rss,
        lateness=lateness,
        floor_s=floor_s,
    )
    result["machine_loadavg_1m"] = round(loadavg, 2)
    return result
