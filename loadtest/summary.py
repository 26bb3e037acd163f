"""Turn the callers' tallies of one step into the step's report (a JSON-ready dict).

Latency is end of speech (last speech frame sent) -> first reply audio frame received.
`overhead_raw` is latency minus the simulated floor (750 ms with ENDPOINT_SILENCE_MS=200);
it includes webrtcvad's own hangover (the frames after speech it still calls speech, a
property of the VAD algorithm measured on the fixture), which `overhead` subtracts, so
`overhead` is the time our server adds. Both are reported.
"""

from __future__ import annotations

from typing import Any

from loadtest.accounting import CallerTally, LatenessHistogram, percentile
from loadtest.probe import Sample, cpu_cores

#: A step passes when p95 overhead is within this and nothing went wrong.
TARGET_P95_MS = 15.0


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def _pcts(values: list[float]) -> dict[str, float | None]:
    return {f"p{q}": _ms(percentile(values, q)) for q in (50, 95, 99)} | {
        "max": _ms(max(values)) if values else None
    }


def summarize(
    *,
    plan: Any,
    script: Any,
    tallies: list[CallerTally],
    connect_failures: dict[str, int],
    connect_s: float,
    server: tuple[Sample | None, Sample | None],
    me: tuple[Sample, Sample],
    baseline_rss: int | None,
    lateness: LatenessHistogram,
    floor_s: float,
    target_p95_ms: float = TARGET_P95_MS,
) -> dict[str, Any]:
    turns = [t for tally in tallies for t in tally.turns]
    answered = [t for t in turns if t.first_audio is not None]
    latencies = [t.latency for t in answered if t.latency is not None]
    hang = script.vad_hangover_s
    overhead_raw = [x - floor_s for x in latencies]
    overhead = [x - hang for x in overhead_raw]
    endpoint_lag = [
        t.vad_end - t.endpoint_frame
        for t in turns
        if t.vad_end is not None and t.endpoint_frame is not None
    ]
    players = [t.player for t in answered if t.player is not None]
    underruns = sum(p.underruns for p in players)
    errors: dict[str, int] = {}
    close_codes: dict[str, int] = {}
    for tally in tallies:
        for k, v in tally.errors.items():
            errors[k] = errors.get(k, 0) + v
        for code, v in tally.close_codes.items():
            if code != 1000:
                close_codes[str(code)] = close_codes.get(str(code), 0) + v
    no_reply = len(turns) - len(answered)
    interrupted = sum(1 for t in turns if t.interrupted)
    disconnects = sum(t.disconnects for t in tallies)
    n = len(tallies)

    result: dict[str, Any] = {
        "callers": plan.callers,
        "connected": n,
        "connect_failures": connect_failures,
        "connect_s": round(connect_s, 2),
        "measure_s": plan.measure_s,
        "turns": len(turns),
        "answered": len(answered),
        "no_reply": no_reply,
        "interrupted": interrupted,
        "latency_ms": _pcts(latencies),
        "overhead_raw_ms": _pcts(overhead_raw),
        "overhead_ms": _pcts(overhead),
        "endpoint_lag_ms": _pcts(endpoint_lag),
        "underruns": underruns,
        "turns_with_underrun": sum(1 for p in players if p.underruns),
        "underrun_gap_ms": round(sum(p.gap_s for p in players) * 1000, 1),
        "reply_audio_s_mean": round(sum(p.seconds for p in players) / len(players), 3)
        if players
        else None,
        "errors": errors,
        "disconnects": disconnects,
        "close_codes": close_codes,
        "frames_sent": sum(t.frames_sent for t in tallies),
        "pacing_ms": {
            "p50": _ms(lateness.percentile(50)),
            "p99": _ms(lateness.percentile(99)),
            "max": _ms(lateness.max),
        },
        "generator_cpu_cores": round(cpu_cores(*me), 3),
    }
    before, after = server
    if before is not None and after is not None:
        cores = cpu_cores(before, after)
        result["server"] = {
            "cpu_cores": round(cores, 3),
            "processes": after.processes,
            "rss_mb": round(after.rss / 2**20, 1),
            "sessions_per_core": round(n / cores, 1) if cores > 0 else None,
            "cpu_ms_per_session_second": round(cores * 1000 / n, 3) if n else None,
        }
        if baseline_rss is not None and n:
            per = (after.rss - baseline_rss) / n
            result["server"]["rss_per_session_kb"] = round(per / 1024, 1)
    reasons = failures(result, target_p95_ms)
    result["pass"] = not reasons
    result["fail_reasons"] = reasons
    return result


def failures(r: dict[str, Any], target_p95_ms: float) -> list[str]:
    """Why a step does not hold the budget (empty: it holds)."""
    out = []
    p95 = r["overhead_ms"]["p95"]
    if p95 is None:
        out.append("no answered turns")
    elif p95 > target_p95_ms:
        out.append(f"p95 overhead {p95} ms > {target_p95_ms} ms")
    if r["connected"] < r["callers"]:
        out.append(f"{r['callers'] - r['connected']} callers failed to connect")
    for key in ("underruns", "no_reply", "interrupted", "disconnects"):
        if r[key]:
            out.append(f"{key}: {r[key]}")
    if r["errors"]:
        out.append(f"errors: {r['errors']}")
    return out
