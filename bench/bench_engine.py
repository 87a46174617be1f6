"""Which llama.cpp engine: llama-cpp-python (``llama_cpp.Llama``) vs llama.cpp's server engine
in-process (``xllamacpp.Server``), side by side in one run on the bundled model.

Run: ``.venv/bin/python bench/bench_engine.py [--threads 2] [--tokens 96] [--parallel 4]``

Each engine runs in its own subprocess (so RSS is its own), one after the other, and answers:

- load time; single-stream decode tok/s; aggregate tok/s with 4 concurrent requests
  (llama-cpp-python has one context: requests take turns, as Mimir's former backend did);
- prefix reuse: a long prompt, then a decision prompt, then the long prompt with a new
  question: prompt tokens the third request really evaluates;
- choice scoring: the pick on Mimir's real decision prompts (exact next-token log-probs
  from the logits vs the server engine's top-20 first-token log-probs);
- cancellation: tokens generated after asking to stop at token 5;
- memory: peak RSS over load + 4 concurrent requests vs Mimir's estimate for that engine.

Install time is not re-measured by default (a llama-cpp-python build takes ~8 min on 2 cores):
pass the measured seconds (``--install-llama-cpp-python-s``, ``--install-xllamacpp-s``), or
``--measure-install`` to time ``pip install --no-cache-dir xllamacpp`` into a fresh venv here.
llama-cpp-python is optional now; without it its column says so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time

LONG_SYSTEM = (
    "You are Mimir, a patient tutor. Explain step by step, check understanding, use LaTeX for "
    "mathematics, never give answers to graded work, and end with one short question. "
) * 6
QUESTIONS = ("What does sine mean?", "What does cosine mean?", "What is a tangent?", "What is pi?")
STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper and the sea."}]
DECISION_CASES = (
    ("tool", "Plot y = x^2 for x from -3 to 3"),
    ("tool", "What is a noun?"),
    ("practice_questions", "Can you give me practice questions on fractions?"),
    ("understanding", "I don't get it, can you explain again?"),
    ("guiding_teaching", "Just give me the answer to my homework question 4"),
)


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Peak:
    """Samples RSS every 20 ms in a thread."""

    def __init__(self) -> None:
        self.value = rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.value = max(self.value, rss())

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return max(self.value, rss())


def speeds(generate, tokens: int, parallel: int) -> tuple[float, float]:
    """Single-stream decode tok/s, then aggregate tok/s of ``parallel`` requests at once.
    ``generate(messages, max_tokens)`` returns (tokens, time to first token, decode time, ...)."""
    n, _, decode, *_ = generate(STORY, tokens)
    results: list[int] = []
    t = time.perf_counter()
    workers = [threading.Thread(target=lambda: results.append(generate(STORY, tokens)[0])) for _ in range(parallel)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return n / decode, sum(results) / (time.perf_counter() - t)


def decision_messages() -> list[tuple[list[dict], tuple[str, ...]]]:
    from mimir.tutor.prompts import PromptLibrary

    lib = PromptLibrary()
    out = []
    for name, message in DECISION_CASES:
        prompt = lib.decision(name)
        msgs = [{"role": m.role, "content": m.content} for m in prompt.messages(message, [])]
        out.append((msgs, prompt.choices))
    return out


# -- llama-cpp-python ------------------------------------------------------------------------
def run_llama_cpp_python(path: str, threads: int, tokens: int, parallel: int) -> dict:
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    base = rss()
    peak = Peak()
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(path, n_ctx=2048, n_threads=threads, n_batch=512, use_mmap=False, verbose=False)
    load_s = time.perf_counter() - t0
    lock = threading.Lock()  # one context: Mimir's former backend serialised on a lock like this

    def generate(messages, max_tokens, stop_after=None) -> tuple[int, float, float]:
        with lock:
            t = time.perf_counter()
            first = None
            n = 0
            stream = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0,
                                                stream=True)
            for chunk in stream:
                if chunk["choices"][0]["delta"].get("content"):
                    n += 1
                    first = first or time.perf_counter()
                    if stop_after and n >= stop_after:
                        stream.close()
                        break
            return n, (first or time.perf_counter()) - t, time.perf_counter() - (first or t)

    single, aggregate = speeds(generate, tokens, parallel)

    fmt = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=llm.detokenize([llm.token_eos()], special=True).decode(),
        bos_token=llm.detokenize([llm.token_bos()], special=True).decode(),
    )

    def tokens_of(messages) -> list[int]:
        return llm.tokenize(fmt(messages=messages).prompt.encode(), add_bos=False, special=True)

    def evaluated_next(messages) -> int:
        toks = tokens_of(messages)
        cached = list(llm.input_ids[: llm.n_tokens])
        lcp = 0
        while lcp < min(len(cached), len(toks) - 1) and cached[lcp] == toks[lcp]:
            lcp += 1
        return len(toks) - lcp

    def long_prompt(q):
        return [{"role": "system", "content": LONG_SYSTEM}, {"role": "user", "content": q}]

    decisions = decision_messages()
    generate(long_prompt(QUESTIONS[0]), 1)
    generate(decisions[0][0], 1)
    reuse_in = len(tokens_of(long_prompt(QUESTIONS[1])))
    reuse_eval = evaluated_next(long_prompt(QUESTIONS[1]))
    generate(long_prompt(QUESTIONS[1]), 1)

    import numpy as np

    picks = []
    for msgs, choices in decisions:
        toks = tokens_of(msgs)
        llm.reset()
        llm.eval(toks)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(llm.n_vocab(),)).astype(float)
        logp = logits - logits.max() - math.log(np.exp(logits - logits.max()).sum())
        scores = {c: float(logp[llm.tokenize(c.encode(), add_bos=False)[0]]) for c in choices}
        picks.append(max(choices, key=lambda c: scores[c]))

    n_cancel, _, _ = generate(STORY, tokens, stop_after=5)
    used = peak.stop() - base
    llm.close()
    return {
        "load_s": load_s, "single_tok_s": single, "aggregate_tok_s": aggregate, "reuse_in": reuse_in,
        "reuse_evaluated": reuse_eval, "picks": picks, "cancel_tokens": n_cancel, "peak_bytes": used,
        "estimate_bytes": estimate_bytes(path, parallel=1),
    }


# -- xllamacpp (the llama_cpp backend's engine) ----------------------------------------------
def run_xllamacpp(path: str, threads: int, tokens: int, parallel: int) -> dict:
    import xllamacpp

    base = rss()
    peak = Peak()
    p = xllamacpp.CommonParams()
    p.model.path = path
    p.n_ctx = 2048 * parallel
    p.n_parallel = parallel
    p.kv_unified = False
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.cache_ram_mib = 0
    p.warmup = False
    p.verbosity = -1
    t0 = time.perf_counter()
    server = xllamacpp.Server(p)
    load_s = time.perf_counter() - t0

    def generate(messages, max_tokens, stop_after=None, **extra) -> tuple[int, float, float, dict]:
        t = time.perf_counter()
        state = {"n": 0, "first": None, "last": {}}

        def cb(chunk) -> bool:
            for ch in chunk.get("choices") or ():
                if (ch.get("delta") or {}).get("content"):
                    state["n"] += 1
                    state["first"] = state["first"] or time.perf_counter()
            if chunk.get("timings"):
                state["last"] = chunk["timings"]
            return bool(stop_after and state["n"] >= stop_after)

        body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
                "cache_prompt": True, **extra}
        server.handle_chat_completions(body, cb)
        first = state["first"] or time.perf_counter()
        return state["n"], first - t, time.perf_counter() - first, state["last"]

    single, aggregate = speeds(generate, tokens, parallel)

    def long_prompt(q):
        return [{"role": "system", "content": LONG_SYSTEM}, {"role": "user", "content": q}]

    decisions = decision_messages()
    generate(long_prompt(QUESTIONS[0]), 1)
    generate(decisions[0][0], 1)
    *_, timings = generate(long_prompt(QUESTIONS[1]), 1)
    reuse_in = int(timings.get("prompt_n", 0)) + int(timings.get("cache_n", 0))
    reuse_eval = int(timings.get("prompt_n", 0))

    picks = []
    for msgs, choices in decisions:
        r = server.handle_chat_completions({"messages": msgs, "max_tokens": 1, "temperature": 0.0, "logprobs": True,
                                            "top_logprobs": 20})
        top = r["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        from mimir.models.base import scores_from_top_logprobs

        scores = scores_from_top_logprobs(top, choices)
        picks.append(max(choices, key=lambda c: scores[c]))

    n_cancel, *_ = generate(STORY, tokens, stop_after=5)
    used = peak.stop() - base
    server = None  # the engine frees its memory with its last reference
    return {
        "load_s": load_s, "single_tok_s": single, "aggregate_tok_s": aggregate, "reuse_in": reuse_in,
        "reuse_evaluated": reuse_eval, "picks": picks, "cancel_tokens": n_cancel, "peak_bytes": used,
        "estimate_bytes": estimate_bytes(path, parallel=parallel),
    }


def estimate_bytes(path: str, parallel: int) -> int:
    from dataclasses import replace

    from mimir.config import bundled_model_spec
    from mimir.models.llama_server import LlamaServerBackend
    from mimir.models.spec import ModelSource

    spec = replace(bundled_model_spec(), source=ModelSource("path", path), options={"parallel": parallel})
    return LlamaServerBackend().estimate(spec).total_bytes


def measure_install() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", f"{tmp}/venv"], check=True)
        subprocess.run([f"{tmp}/venv/bin/pip", "install", "--quiet", "--no-cache-dir", "xllamacpp"], check=True,
                       env={**os.environ, "PIP_NO_CACHE_DIR": "1"})
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--install-llama-cpp-python-s", type=float, default=None)
    ap.add_argument("--install-xllamacpp-s", type=float, default=None)
    ap.add_argument("--measure-install", action="store_true")
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from mimir.config import bundled_model_spec

    path = str(bundled_model_spec().source.local_path())
    if args.engine:
        fn = run_llama_cpp_python if args.engine == "llama-cpp-python" else run_xllamacpp
        print(json.dumps(fn(path, args.threads, args.tokens, args.parallel)))
        return

    if args.measure_install:
        args.install_xllamacpp_s = measure_install()
    results: dict[str, dict | None] = {}
    for engine in ("llama-cpp-python", "xllamacpp"):
        proc = subprocess.run(
            [sys.executable, __file__, "--engine", engine, "--threads", str(args.threads), "--tokens",
             str(args.tokens), "--parallel", str(args.parallel)],
            capture_output=True, text=True,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        results[engine] = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
        if results[engine] is None:
            print(f"{engine}: not measured ({(proc.stderr.strip().splitlines() or ['?'])[-1]})")
    old, new = results["llama-cpp-python"], results["xllamacpp"]
    mib = 1024 * 1024

    def cell(r, key, fmt):
        return "-" if r is None or r.get(key) is None else fmt(r[key])

    def ratio(key, invert=False):
        if old is None or new is None or not old.get(key) or not new.get(key):
            return "-"
        return f"{(old[key] / new[key]) if invert else (new[key] / old[key]):.2f}x"

    rows = [
        ("install on a fresh machine (s)", f"{args.install_llama_cpp_python_s:.0f}"
         if args.install_llama_cpp_python_s else "-", f"{args.install_xllamacpp_s:.0f}"
         if args.install_xllamacpp_s else "-",
         f"{args.install_llama_cpp_python_s / args.install_xllamacpp_s:.0f}x faster"
         if args.install_llama_cpp_python_s and args.install_xllamacpp_s else "-"),
        ("load (s)", cell(old, "load_s", "{:.2f}".format), cell(new, "load_s", "{:.2f}".format), ratio("load_s")),
        ("single-stream decode (tok/s)", cell(old, "single_tok_s", "{:.1f}".format),
         cell(new, "single_tok_s", "{:.1f}".format), ratio("single_tok_s")),
        (f"aggregate, {args.parallel} concurrent (tok/s)", cell(old, "aggregate_tok_s", "{:.1f}".format),
         cell(new, "aggregate_tok_s", "{:.1f}".format), ratio("aggregate_tok_s")),
        ("  aggregate / own single stream", cell(old, "aggregate_tok_s", lambda v: f"{v / old['single_tok_s']:.2f}x"),
         cell(new, "aggregate_tok_s", lambda v: f"{v / new['single_tok_s']:.2f}x"), "target >= 1.3x"),
        ("prefix reuse: evaluated / prompt tokens",
         cell(old, "reuse_evaluated", lambda v: f"{v}/{old['reuse_in']}"),
         cell(new, "reuse_evaluated", lambda v: f"{v}/{new['reuse_in']}"), "long prompt, decision, long prompt"),
        ("choice scoring: picks", cell(old, "picks", ",".join), cell(new, "picks", ",".join),
         "same" if old and new and old["picks"] == new["picks"] else "differ" if old and new else "-"),
        ("cancel at token 5: tokens generated", cell(old, "cancel_tokens", str), cell(new, "cancel_tokens", str), ""),
        ("peak RSS, load + concurrent (MiB)", cell(old, "peak_bytes", lambda v: f"{v / mib:.0f}"),
         cell(new, "peak_bytes", lambda v: f"{v / mib:.0f}"), ratio("peak_bytes")),
        ("Mimir's estimate (MiB)", cell(old, "estimate_bytes", lambda v: f"{v / mib:.0f}"),
         cell(new, "estimate_bytes", lambda v: f"{v / mib:.0f}"),
         "bounds" if new and new["estimate_bytes"] >= new["peak_bytes"] else "UNDER" if new else "-"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"engines on the bundled model, {args.threads} threads, {args.tokens}-token answers, "
          f"server engine with {args.parallel} slots")
    print(f"{'':{width}}  {'llama-cpp-python':>18}  {'xllamacpp':>18}  ratio / note")
    for name, a, b, note in rows:
        print(f"{name:{width}}  {a:>18}  {b:>18}  {note}")


if __name__ == "__main__":
    main()
