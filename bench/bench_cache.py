"""Cache inspector benchmark: scan and plan on a synthetic hub cache of 1,000 repos.

Run: ``.venv/bin/python bench/bench_cache.py [--repos 1000] [--revisions 4] [--runs 5]``

Builds a real cache tree in a temporary folder (each repo: several revisions sharing
``config.json`` and ``tokenizer.json`` blobs, one weights blob per revision, ``refs/main`` on
the newest; every 20th repo also has an interrupted download), and a configuration that
references every 10th repo. Then, interleaved and repeated, it times:

- ``huggingface_hub.scan_cache_dir`` alone on the tree;
- ``mimir.cache.scan_cache`` (that scan plus references, link checks and warnings);
- ``plan_cleanup`` with ``unreferenced``, ``old_revisions`` and ``incomplete``;
- one ``execute()`` of that plan (last: it deletes), checked against the plan's promise,
  next to ``huggingface_hub``'s ``DeleteCacheStrategy.execute()`` deleting the same repos
  and revisions on an identical twin tree.

Target: ``scan_cache`` under 2 s for 1,000 repos on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mimir.cache import plan_cleanup, scan_cache
from mimir.cache.layout import repo_folder, write_revision
from mimir.config import settings_from_dict

TARGET_SCAN_S = 2.0


def build(root: Path, repos: int, revisions: int) -> int:
    """Write the synthetic cache; returns the number of snapshot files."""
    files = 0
    for i in range(repos):
        repo_id = f"org{i % 37}/model-{i:05d}"
        shared = {"config.json": f'{{"id": {i}}}'.encode(), "tokenizer.json": b"t" * (512 + i % 100)}
        for r in range(revisions):
            content = dict(shared)
            content[f"model-{r % 2}.safetensors"] = (f"{i}-{r}".encode() * 200)[: 2048 + r]
            refs = ["main"] if r == revisions - 1 else []
            write_revision(root, repo_id, f"{i:08x}{r:032x}", content, refs=refs)
            files += len(content)
        if i % 20 == 0:
            (repo_folder(root, repo_id) / "blobs" / f"{i:016x}.incomplete").write_bytes(b"p" * 333)
    return files


def settings_for(repos: int):
    models = {f"m{i}": {"repo": f"org{i % 37}/model-{i:05d}"} for i in range(0, repos, 10)}
    return settings_from_dict({"models": models}, env={})


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--revisions", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)

    from huggingface_hub import scan_cache_dir

    with tempfile.TemporaryDirectory(prefix="mimir-bench-cache-") as tmp:
        root = Path(tmp) / "hub"
        build_s, files = timed(lambda: build(root, args.repos, args.revisions))
        settings = settings_for(args.repos)
        print(
            f"cache: {args.repos} repos x {args.revisions} revisions, {files} snapshot files "
            f"(built in {build_s:.1f}s) at {root}"
        )
        scan_cache_dir(root)  # warm the OS caches once for both
        hf_s, ours_s, plan_s = [], [], []
        report = plan = None
        for _ in range(args.runs):
            t, _info = timed(lambda: scan_cache_dir(root))
            hf_s.append(t)
            t, report = timed(lambda: scan_cache(root, settings))
            ours_s.append(t)
            t, plan = timed(lambda: plan_cleanup(report, unreferenced=True, old_revisions=True, incomplete=True))
            plan_s.append(t)
        assert report is not None and plan is not None
        # the same deletions through huggingface_hub's own DeleteCacheStrategy, on a twin tree
        twin = Path(tmp) / "twin"
        build(twin, args.repos, args.revisions)
        hashes = [rev.commit_hash for r in plan.repos for rev in report.repo(r.repo_id, r.repo_type).revisions]
        hashes += [rev.commit_hash for rev in plan.revisions]
        strategy = scan_cache_dir(twin).delete_revisions(*hashes)
        hf_exec_s, _ = timed(strategy.execute)
        exec_s, result = timed(plan.execute)

    hf, ours, planned = statistics.median(hf_s), statistics.median(ours_s), statistics.median(plan_s)
    rows = [
        ("huggingface_hub.scan_cache_dir", hf, "1.00x", ""),
        ("mimir scan_cache", ours, f"{ours / hf:.2f}x", "PASS" if ours < TARGET_SCAN_S else "FAIL"),
        ("plan_cleanup (all options)", planned, f"{planned / hf:.2f}x", ""),
        ("plan.execute() (once)", exec_s, f"{exec_s / hf:.2f}x", ""),
        ("hf DeleteCacheStrategy.execute", hf_exec_s, f"{hf_exec_s / hf:.2f}x", ""),
    ]
    print(f"\nmedian of {args.runs} interleaved runs; target: scan_cache < {TARGET_SCAN_S:.1f}s")
    print(f"{'step':<32} {'time_s':>8} {'vs hf scan':>11} {'target':>7}")
    for name, seconds, ratio, verdict in rows:
        print(f"{name:<32} {seconds:>8.3f} {ratio:>11} {verdict:>7}")
    print(
        f"\nreport: {report.repos_count} repos, {len(report.referenced_repos)} referenced, "
        f"{len(report.warnings)} warnings, {report.size_on_disk_str}"
    )
    print(
        f"plan: {len(plan.repos)} repos, {len(plan.revisions)} revisions, {len(plan.files)} partial files, "
        f"promised {plan.expected_freed_bytes} bytes; execute freed {result.freed_bytes} bytes "
        f"({'equal' if result.freed_bytes == plan.expected_freed_bytes else 'DIFFERENT'}), "
        f"{len(result.failed)} failures"
    )
    print(
        f"execute vs huggingface_hub deleting the same repos and revisions (less {len(plan.files)} partial "
        f"files) on a twin tree: {exec_s / hf_exec_s:.2f}x; both are mostly unlink/rmdir time on this disk"
    )
    return 0 if ours < TARGET_SCAN_S and result.freed_bytes == plan.expected_freed_bytes else 1


if __name__ == "__main__":
    sys.exit(main())
