"""A newcomer's first answer: fresh clone, ``make run``, first tutor answer, timed.

Run: ``python3 bench/fresh_run.py [--repo .] [--keep] [--json]`` (plain Python 3.11, no venv
needed: this is what a newcomer has).

It clones the repository's committed ``HEAD`` into a temporary directory, runs ``make run``
there with pip's cache disabled (``PIP_NO_CACHE_DIR=1``: every package is downloaded and
installed as on a fresh machine) and a fresh ``MIMIR_HOME``, waits until the server answers
``GET /v1/models``, then asks the tutor one question over the OpenAI-compatible API and times
the answer. It prints when each phase ended, from the moment ``make run`` started:

- ``install``: the first line the server logs (the venv is set up; Python starts Mimir);
- ``server up``: ``/v1/models`` answers;
- ``first answer``: the tutor's answer to the question is complete.

The issue's target is a first answer in at most 3 minutes. The machine's load average is
printed next to the figures: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

QUESTION = "What is summation?"
TARGET_S = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except (urllib.error.URLError, OSError):
        return 0


def ask(base: str, question: str, timeout: float) -> dict:
    body = json.dumps(
        {"model": "mimir-tutor", "messages": [{"role": "user", "content": question}], "max_tokens": 200}
    ).encode()
    request = urllib.request.Request(
        f"{base}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent), help="repository to clone")
    parser.add_argument("--timeout", type=float, default=1200.0, help="give up after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mimir-fresh-"))
    clone = work / "mimir"
    subprocess.run(["git", "clone", "--quiet", args.repo, str(clone)], check=True)
    commit = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=True).stdout.strip()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PIP_NO_CACHE_DIR="1", MIMIR_HOME=str(work / "home"))
    env.pop("VIRTUAL_ENV", None)
    log_path = work / "make-run.log"
    load_before = os.getloadavg()
    start = time.monotonic()
    log = log_path.open("wb")
    proc = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=clone, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    phases: dict[str, float] = {}
    answer = ""
    error = None
    try:
        while time.monotonic() - start < args.timeout:
            if proc.poll() is not None:
                error = f"make run exited with {proc.returncode} (log: {log_path})"
                break
            if "install" not in phases and (clone / ".venv" / ".run-installed").exists():
                phases["install"] = time.monotonic() - start
            if get(f"{base}/v1/models") == 200:
                phases["server up"] = time.monotonic() - start
                break
            time.sleep(0.5)
        else:
            error = f"no server after {args.timeout:.0f} s (log: {log_path})"
        if error is None:
            out = ask(base, QUESTION, timeout=max(1.0, args.timeout - (time.monotonic() - start)))
            phases["first answer"] = time.monotonic() - start
            answer = out["choices"][0]["message"]["content"]
    except Exception as exc:  # reported in the table: a failed run is a result too
        error = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    load_after = os.getloadavg()
    total = phases.get("first answer")
    result = {
        "commit": commit,
        "phases_s": {k: round(v, 1) for k, v in phases.items()},
        "first_answer_s": None if total is None else round(total, 1),
        "target_s": TARGET_S,
        "met": total is not None and total <= TARGET_S,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "answer_chars": len(answer),
        "error": error,
        "clone": str(clone) if args.keep else None,
    }
    if not args.keep:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"fresh clone of {commit}, make run with PIP_NO_CACHE_DIR=1 (load before {load_before[0]:.2f})")
        print(f"{'phase':<14}{'ends at (s)':>12}")
        for name, at in phases.items():
            print(f"{name:<14}{at:>12.1f}")
        verdict = "met" if result["met"] else "missed"
        print(f"first answer: {result['first_answer_s']} s, target <= {TARGET_S:.0f} s: {verdict}")
        if answer:
            print(f"answer ({len(answer)} chars): {answer[:120]!r}...")
        if error:
            print(f"error: {error}")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
