"""Load test: N simulated students against a real ``mimir serve`` over real HTTP.

Run: ``.venv/bin/python bench/load.py [--users 30] [--seconds 120] [--url URL] [--json]``

Without ``--url`` it starts ``mimir serve --port 0`` on the bundled model in a temporary
``MIMIR_HOME`` (budget ``--budget``, default 1.5GiB) and stops it at the end. Each student is a
thread using the real ``openai`` client: multi-turn tutor sessions (``session_id``, answers of
up to 96 tokens), half of the turns streamed, some plain model completions. Mixed in, on purpose: malformed requests (400
expected), oversized ones (413 expected), the 20 KB history of newlines that once froze the
server, and streams the client abandons after the first token. Meanwhile one thread asks
``GET /v1/models`` every 0.2 s (health latency), and another samples the server's RSS (its
process, found by the port) and ``mimir_queue_depth`` from ``/metrics``.

Students start no request after ``--seconds``; answers still in flight ``--grace`` seconds
later (default 60) are hung up, as students leave when the class ends (``cut_at_end``; the
server cancels those turns).

Outcomes: ``ok`` (answered), ``abandoned`` (the client left on purpose), ``cut_at_end``,
``refused`` (an expected 4xx for a bad request, or 429/503 with Retry-After: the queue doing its job), and
``errors``: anything unexpected (another 5xx, a wrong status, a hang, a stream that broke
without ``[DONE]``). Targets on the bundled model: 0 errors, peak RSS within the budget,
``/v1/models`` p99 < 0.2 s throughout.

``--json`` prints one object: requests, errors, outcomes, p50_s, p95_s, max_s, ttft_p50_s,
ttft_p95_s, max_queue_depth, peak_rss_bytes, budget_bytes, health_p50_s, health_p99_s,
health_max_s, newline_request_s, error_samples.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

QUESTIONS = [
    "What is summation?",
    "What does cos, tan and sin do?",
    "Solve 3x - y = 7 and 2x + 3y = 1",
    "Can you make some practice questions about fractions?",
    "Make a bar chart of my test scores: math 82, reading 91, science 77.",
    "I don't understand photosynthesis.",
    "How should I study for the ACT?",
    "Explain subject-verb agreement.",
]
FOLLOW_UPS = ["Can you explain that more simply?", "I think it is 4", "Give me another one", "Why?"]
#: A request with no answer by then counts as a hang. Turns queue behind each other on one
#: model (30 students x a few seconds each), so this is generous.
TIMEOUT_S = 600.0
#: Tokens per tutor answer in the load test: keeps the line moving on a small machine.
TUTOR_MAX_TOKENS = 96


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Results:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outcomes: Counter = Counter()
        self.latencies: list[float] = []
        self.ttfts: list[float] = []
        self.errors: list[str] = []
        self.newline_s: list[float] = []

    def add(self, outcome: str, latency: float | None = None, ttft: float | None = None, error: str | None = None):
        with self.lock:
            self.outcomes[outcome] += 1
            if latency is not None:
                self.latencies.append(latency)
            if ttft is not None:
                self.ttfts.append(ttft)
            if error is not None:
                self.errors.append(error[:300])


class Student(threading.Thread):
    def __init__(self, index: int, url: str, deadline: float, results: Results, seed: int, end: float | None = None):
        super().__init__(name=f"student-{index}", daemon=True)
        import openai

        self.user = f"student-{index}"
        self.rng = random.Random(seed)
        self.url = url
        self.deadline = deadline
        #: When the class is over: requests still waiting then are hung up (their timeout).
        self.end = end if end is not None else deadline + TIMEOUT_S
        self.results = results
        self.openai = openai
        self.client = openai.OpenAI(base_url=url + "/v1", api_key="load-test", max_retries=0, timeout=TIMEOUT_S)
        self.session: str | None = None
        self.closed = False

    def close(self) -> None:
        """The class is over: hang up whatever is still waiting (the server cancels it)."""
        self.closed = True
        self.client.close()

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a broken student is an error of the test, counted
            self.results.add("error", error=f"{self.user}: the student thread died: {type(exc).__name__}: {exc}")

    def _loop(self) -> None:
        while time.monotonic() < self.deadline and not self.closed:
            roll = self.rng.random()
            try:
                if roll < 0.05:
                    self.malformed()
                elif roll < 0.08:
                    self.oversized()
                elif roll < 0.11:
                    self.newline_history()
                elif roll < 0.21:
                    self.abandon()
                elif roll < 0.31:
                    self.plain_completion()
                else:
                    self.tutor_turn()
            except Exception as exc:  # noqa: BLE001 - the load test reports, never dies
                if self.closed or self._cut():
                    self.results.add("cut_at_end")
                else:
                    self.results.add("error", error=f"{self.user}: {type(exc).__name__}: {exc}")
            time.sleep(self.rng.uniform(0.2, 1.5))  # reading the answer

    # -- kinds of requests -----------------------------------------------------------------
    def _timeout(self) -> float:
        return max(5.0, min(TIMEOUT_S, self.end - time.monotonic()))

    def _cut(self) -> bool:
        """A timeout at the end of the class: the student left, not a hang."""
        return time.monotonic() >= self.end - 1.0

    def _busy(self, exc: Exception) -> bool:
        """429/503 with Retry-After: the queue refusing on purpose. Waits as told."""
        status = getattr(exc, "status_code", None)
        if status in (429, 503):
            retry = getattr(getattr(exc, "response", None), "headers", {}).get("retry-after")
            if retry is None:
                self.results.add("error", error=f"{self.user}: {status} without Retry-After")
                return True
            self.results.add(f"refused_{status}")
            time.sleep(min(float(retry), 5.0))
            return True
        return False

    def tutor_turn(self) -> None:
        first = self.session is None
        message = self.rng.choice(QUESTIONS if first or self.rng.random() < 0.3 else FOLLOW_UPS)
        extra = {"session_id": self.session or "new"}
        stream = self.rng.random() < 0.5
        self._complete("mimir-tutor", [{"role": "user", "content": message}], stream, extra, remember=True,
                       max_tokens=TUTOR_MAX_TOKENS)

    def plain_completion(self) -> None:
        messages = [{"role": "user", "content": self.rng.choice(QUESTIONS)}]
        self._complete("default", messages, self.rng.random() < 0.5, {}, max_tokens=48)

    def _complete(self, model: str, messages: list, stream: bool, extra: dict, *, remember: bool = False,
                  max_tokens: int | None = None) -> None:
        start = time.monotonic()
        try:
            if stream:
                ttft = None
                done = False
                with self.client.chat.completions.create(model=model, messages=messages, stream=True, user=self.user,
                                                         max_tokens=max_tokens, extra_body=extra,
                                                         timeout=self._timeout()) as chunks:
                    for chunk in chunks:
                        if chunk.choices and chunk.choices[0].delta.content and ttft is None:
                            ttft = time.monotonic() - start
                        if chunk.choices and chunk.choices[0].finish_reason:
                            done = True
                        mimir = (chunk.model_extra or {}).get("mimir")
                        if remember and mimir:  # the tutor's closing event names the session
                            self.session = mimir.get("session_id") or self.session
                if not done:
                    self.results.add("error", error=f"{self.user}: stream ended without a finish reason")
                    return
                self.results.add("ok", time.monotonic() - start, ttft)
            else:
                out = self.client.chat.completions.create(model=model, messages=messages, user=self.user,
                                                          max_tokens=max_tokens, extra_body=extra,
                                                          timeout=self._timeout())
                if remember:
                    mimir = (out.model_extra or {}).get("mimir") or {}
                    self.session = mimir.get("session_id") or self.session
                self.results.add("ok", time.monotonic() - start)
        except self.openai.APIStatusError as exc:
            if not self._busy(exc):
                self.results.add("error", error=f"{self.user}: HTTP {exc.status_code}: {str(exc)[:200]}")
        except self.openai.APITimeoutError:
            if self._cut():
                self.results.add("cut_at_end")  # the class ended with this turn still in line
            else:
                self.results.add("error", error=f"{self.user}: no answer within {TIMEOUT_S:.0f} s (hang)")
        except self.openai.APIConnectionError:
            if not self.closed:
                raise
            self.results.add("cut_at_end")  # the class ended with this turn still in line

    def malformed(self) -> None:
        import httpx

        bodies = [
            {"model": "mimir-tutor", "messages": [{"role": "wizard", "content": "hi"}]},
            {"model": "mimir-tutor", "messages": []},
            {"model": "mimir-tutor", "messages": [{"role": "user", "content": "   "}], "stream": True},
            {"model": "default", "max_tokens": 999999, "messages": [{"role": "user", "content": "hi"}]},
        ]
        raw = [b'{"model": "mimir-tutor", "messages": [', b'{"model": "default", "messages": [{"role": "user", "content": "\xff"}]}']
        choice = self.rng.randrange(len(bodies) + len(raw))
        headers = {"content-type": "application/json"}
        if choice < len(bodies):
            response = httpx.post(self.url + "/v1/chat/completions", json=bodies[choice], timeout=TIMEOUT_S)
        else:
            response = httpx.post(self.url + "/v1/chat/completions", content=raw[choice - len(bodies)],
                                  headers=headers, timeout=TIMEOUT_S)
        self._expect(response, {400, 422})

    def oversized(self) -> None:
        import httpx

        body = {"model": "mimir-tutor", "messages": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]}
        self._expect(httpx.post(self.url + "/v1/chat/completions", json=body, timeout=TIMEOUT_S), {413})

    def _expect(self, response, statuses: set[int]) -> None:
        ok_shape = "error" in (response.json() if response.headers.get("content-type", "").startswith(
            "application/json") else {})
        if response.status_code in statuses and ok_shape:
            self.results.add("refused_expected")
        elif response.status_code in (429, 503):
            self.results.add(f"refused_{response.status_code}")
        else:
            self.results.add("error", error=f"{self.user}: expected {sorted(statuses)}, got {response.status_code}: "
                                            f"{response.text[:150]}")

    def newline_history(self) -> None:
        """The request that froze the server before: an assistant message of 20,000 newlines."""
        messages = [{"role": "user", "content": "help"}, {"role": "assistant", "content": "\n" * 20000},
                    {"role": "user", "content": "I think it is 4"}]
        start = time.monotonic()
        before = len(self.results.latencies)
        self._complete("mimir-tutor", messages, False, {}, max_tokens=32)
        if len(self.results.latencies) > before:
            with self.results.lock:
                self.results.newline_s.append(time.monotonic() - start)

    def abandon(self) -> None:
        """Start a streamed answer and hang up after the first token."""
        try:
            with self.client.chat.completions.create(
                model="mimir-tutor", stream=True, user=self.user, timeout=self._timeout(),
                messages=[{"role": "user", "content": self.rng.choice(QUESTIONS)}],
            ) as chunks:
                for chunk in chunks:
                    if chunk.choices and chunk.choices[0].delta.content:
                        break
            self.results.add("abandoned")
        except self.openai.APIStatusError as exc:
            if not self._busy(exc):
                self.results.add("error", error=f"{self.user}: HTTP {exc.status_code} on a stream: {str(exc)[:200]}")


class Watcher(threading.Thread):
    """Health latency (GET /v1/models), server RSS and queue depth, sampled throughout."""

    def __init__(self, url: str, pid: int | None, stop: threading.Event):
        super().__init__(name="watcher", daemon=True)
        self.url, self.pid, self.stop = url, pid, stop
        self.health: list[float] = []
        self.health_failures: list[str] = []
        self.peak_rss = 0
        self.max_depth = 0
        self.budget: int | None = None

    def run(self) -> None:
        import httpx
        import psutil

        process = psutil.Process(self.pid) if self.pid else None
        with httpx.Client(timeout=10) as client:
            tick = 0
            while not self.stop.is_set():
                start = time.monotonic()
                try:
                    response = client.get(self.url + "/v1/models")
                    self.health.append(time.monotonic() - start)
                    if response.status_code != 200:
                        self.health_failures.append(f"/v1/models answered {response.status_code}")
                except httpx.HTTPError as exc:
                    self.health_failures.append(f"/v1/models: {type(exc).__name__}")
                if process is not None:
                    try:
                        rss = process.memory_info().rss + sum(c.memory_info().rss for c in process.children(True))
                        self.peak_rss = max(self.peak_rss, rss)
                    except psutil.Error:
                        pass
                if tick % 5 == 0:
                    self._metrics(client)
                tick += 1
                self.stop.wait(0.2)

    def _metrics(self, client) -> None:
        try:
            text = client.get(self.url + "/metrics").text
        except Exception:  # noqa: BLE001 - /metrics is optional
            return
        for line in text.splitlines():
            if line.startswith("mimir_queue_depth "):
                self.max_depth = max(self.max_depth, int(float(line.split()[1])))
            elif line.startswith('mimir_budget_bytes{device="ram"}'):
                self.budget = int(float(line.split()[1]))


def _pid_listening(url: str) -> int | None:
    import psutil

    parsed = urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == parsed.port:
            return conn.pid
    return None


def _start_server(budget: str, home: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "MIMIR_HOME": str(home), "MIMIR_BUDGET": budget, "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("MIMIR_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "mimir.cli.main", "serve", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.startswith("Mimir web app: "):
            url = line.split()[3].rstrip("/")
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, url
    raise SystemExit("mimir serve did not start")


def _wait_ready(url: str) -> None:
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            # One real turn: the model is loaded before the clock starts.
            response = httpx.post(url + "/v1/chat/completions", timeout=300, json={
                "model": "mimir-tutor", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
            if response.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit("the server never answered a turn")


def run(users: int, seconds: float, url: str | None, budget: str, seed: int, grace: float = 60.0) -> dict:
    proc = None
    tmp = None
    if url is None:
        tmp = tempfile.TemporaryDirectory(prefix="mimir-load-")
        proc, url = _start_server(budget, Path(tmp.name))
    url = url.rstrip("/")
    try:
        _wait_ready(url)
        pid = proc.pid if proc is not None else _pid_listening(url)
        stop = threading.Event()
        watcher = Watcher(url, pid, stop)
        watcher.start()
        results = Results()
        deadline = time.monotonic() + seconds
        students = [Student(i, url, deadline, results, seed + i, end=deadline + grace) for i in range(users)]
        for student in students:
            student.start()
            time.sleep(0.05)
        end = deadline + grace + 15
        for student in students:
            student.join(max(0.0, end - time.monotonic()))
        for student in students:
            if student.is_alive():
                student.close()  # requests still in line when the class ends are hung up
        for student in students:
            student.join(60)
            if student.is_alive():
                results.add("error", error=f"{student.user}: did not stop after hanging up (hang)")
        stop.set()
        watcher.join(10)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        if tmp is not None:
            tmp.cleanup()
    from mimir.units import parse_size

    errors = results.outcomes["error"] + len(watcher.health_failures)
    return {
        "users": users, "seconds": seconds, "url": url,
        "requests": sum(results.outcomes.values()),
        "errors": errors,
        "outcomes": dict(results.outcomes),
        "p50_s": _quantile(results.latencies, 0.5), "p95_s": _quantile(results.latencies, 0.95),
        "max_s": max(results.latencies, default=None),
        "ttft_p50_s": _quantile(results.ttfts, 0.5), "ttft_p95_s": _quantile(results.ttfts, 0.95),
        "max_queue_depth": watcher.max_depth,
        "peak_rss_bytes": watcher.peak_rss or None,
        "budget_bytes": watcher.budget or (parse_size(budget) if proc is not None else None),
        "health_checks": len(watcher.health),
        "health_p50_s": _quantile(watcher.health, 0.5), "health_p99_s": _quantile(watcher.health, 0.99),
        "health_max_s": max(watcher.health, default=None),
        "newline_request_s": statistics.median(results.newline_s) if results.newline_s else None,
        "error_samples": (results.errors + watcher.health_failures)[:10],
    }


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--url", help="a running server (default: start mimir serve on the bundled model)")
    parser.add_argument("--budget", default="1.5GiB", help="memory budget of the server this script starts")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--grace", type=float, default=60.0,
                        help="seconds after --seconds for answers in flight; then they are hung up (cut_at_end)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    out = run(args.users, args.seconds, args.url, args.budget, args.seed, args.grace)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{out['users']} students for {out['seconds']:.0f} s against {out['url']}\n")
    print("| outcome | requests |\n| --- | ---: |")
    for outcome, count in sorted(out["outcomes"].items()):
        print(f"| {outcome} | {count} |")
    print(f"| **total** | {out['requests']} |\n")
    rss_ok = out["peak_rss_bytes"] is not None and out["budget_bytes"] is not None and \
        out["peak_rss_bytes"] <= out["budget_bytes"]
    rows = [
        ("unexpected errors", str(out["errors"]), "0", "yes" if out["errors"] == 0 else "NO"),
        ("latency p50 / p95 / max", f"{_s(out['p50_s'])} / {_s(out['p95_s'])} / {_s(out['max_s'])}", "", ""),
        ("time to first token p50 / p95", f"{_s(out['ttft_p50_s'])} / {_s(out['ttft_p95_s'])}", "", ""),
        ("max queue depth", str(out["max_queue_depth"]), "", ""),
        ("server peak RSS vs budget", f"{_mib(out['peak_rss_bytes'])} / {_mib(out['budget_bytes'])}", "within",
         "yes" if rss_ok else "NO"),
        ("/v1/models p50 / p99 / max", f"{_s(out['health_p50_s'])} / {_s(out['health_p99_s'])} / "
         f"{_s(out['health_max_s'])} ({out['health_checks']} checks)", "p99 < 0.2 s",
         "yes" if (out["health_p99_s"] or 9) < 0.2 else "NO"),
        ("20 KB newline history request (median)", _s(out["newline_request_s"]), "", ""),
    ]
    print("| measure | value | target | met |\n| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if out["error_samples"]:
        print("\nunexpected errors (first 10):")
        for sample in out["error_samples"]:
            print(f"- {sample}")


if __name__ == "__main__":
    main()
