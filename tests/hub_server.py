"""A small Hugging Face Hub-compatible HTTP server for tests (127.0.0.1 only).

It speaks the parts of the Hub's protocol that ``huggingface_hub`` uses to list and download
a repo: ``/api/models/{repo}/revision/{rev}`` (model info), ``/api/models/{repo}/tree/{rev}``
(file listing), ``/api/models/{repo}/paths-info/{rev}``, and ``/{repo}/resolve/{rev}/{path}``
with the headers the client reads (``ETag``, ``X-Repo-Commit``, ``Content-Length``, and
``X-Linked-Etag``/``X-Linked-Size`` for LFS files) and HTTP range requests.

Real faults on demand: ``cut_after[path] = n`` sends only ``n`` bytes of the first download
of ``path`` and then closes the connection; ``corrupt.add(path)`` serves different bytes under
the same checksum headers. ``requests`` records every request (method, path, Range header).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubRepo:
    files: dict[str, bytes]
    #: Paths stored through LFS (big binaries): their ETag is the content's sha256.
    lfs: set[str]
    commit: str = "c0ffee" + "0" * 34

    def etag(self, path: str) -> str:
        data = self.files[path]
        return hashlib.sha256(data).hexdigest() if path in self.lfs else git_blob_sha1(data)

    def tree_entry(self, path: str) -> dict:
        data = self.files[path]
        entry = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
        if path in self.lfs:
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry


@dataclass
class LocalHub:
    repos: dict[str, HubRepo] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""

    def add(self, repo_id: str, files: dict[str, bytes], *, lfs: set[str] | None = None) -> HubRepo:
        repo = HubRepo(dict(files), set(lfs if lfs is not None else {p for p in files if p.endswith((".gguf", ".safetensors"))}))
        self.repos[repo_id] = repo
        return repo

    def downloads(self, path: str) -> list[str | None]:
        """The Range header of every GET of ``path``'s content (None: the whole file)."""
        return [rng for method, p, rng in self.requests if method == "GET" and "/resolve/" in p and p.endswith("/" + path)]


_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<what>revision|tree|paths-info)/(?P<rev>[^/]+)(?P<rest>/.*)?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


def _handler(hub: LocalHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            return

        def _json(self, status: int, payload, headers: dict[str, str] | None = None) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _not_found(self, code: str, message: str) -> None:
            self._json(404, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

        def _route(self) -> None:
            url = urlparse(self.path)
            path = unquote(url.path)
            hub.requests.append((self.command, path, self.headers.get("Range")))
            m = _API.match(path)
            if m:
                return self._api(m, url)
            m = _RESOLVE.match(path)
            if m:
                return self._resolve(m)
            self._not_found("EntryNotFound", f"no route {path}")

        def _repo(self, repo_id: str) -> HubRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._not_found("RepoNotFound", f"Repository {repo_id} not found")
            return repo

        def _api(self, m, url) -> None:
            repo = self._repo(m["repo"])
            if repo is None:
                return
            if m["what"] == "revision":
                siblings = []
                for p in sorted(repo.files):
                    entry = repo.tree_entry(p)
                    sib = {"rfilename": p, "size": entry["size"], "blobId": entry["oid"]}
                    if "lfs" in entry:
                        sib["lfs"] = {"sha256": entry["lfs"]["oid"], "size": entry["size"], "pointerSize": 134}
                    siblings.append(sib)
                return self._json(200, {"id": m["repo"], "modelId": m["repo"], "sha": repo.commit,
                                        "private": False, "siblings": siblings, "tags": []})
            if m["what"] == "tree":
                return self._json(200, [repo.tree_entry(p) for p in sorted(repo.files)])
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode()) if length else parse_qs(url.query)
            wanted = form.get("paths", [])
            return self._json(200, [repo.tree_entry(p) for p in wanted if p in repo.files])

        def _resolve(self, m) -> None:
            repo = self._repo(m["repo"])
            if repo is None:
                return
            path = m["path"]
            if path not in repo.files:
                return self._not_found("EntryNotFound", f"{path} not in {m['repo']}")
            data = repo.files[path]
            served = bytes(b ^ 0xFF for b in data[:64]) + data[64:] if path in hub.corrupt else data
            start = 0
            rng = self.headers.get("Range")
            if rng and self.command == "GET":
                rm = re.match(r"bytes=(\d+)-(\d*)$", rng.strip())
                if rm:
                    start = int(rm.group(1))
            etag = repo.etag(path)
            headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                       "Content-Type": "application/octet-stream"}
            if path in repo.lfs:
                headers["X-Linked-Etag"] = f'"{etag}"'
                headers["X-Linked-Size"] = str(len(data))
            body = served[start:]
            self.send_response(206 if start else 200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if self.command == "HEAD":
                return
            cut = hub.cut_after.pop(path, None)
            if cut is not None and cut < len(body):
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(body)

        do_GET = do_HEAD = do_POST = _route

    return Handler


class HubServer:
    """``with HubServer() as hub:`` serves a :class:`LocalHub` on 127.0.0.1 in a thread."""

    def __init__(self) -> None:
        self.hub = LocalHub()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.hub))
        self._server.daemon_threads = True
        self.hub.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)

    def __enter__(self) -> LocalHub:
        self._thread.start()
        return self.hub

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
