"""A real llama.cpp model server for the openai backend's tests: llama.cpp's own HTTP server
(the engine the llama_cpp backend embeds, through xllamacpp) serving a GGUF file.

Run: ``python tests/llama_http_server.py MODEL.gguf PORT ALIAS``; it serves on 127.0.0.1
until killed.
"""

from __future__ import annotations

import sys
import threading

import xllamacpp


def main() -> None:
    path, port, alias = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    params = xllamacpp.CommonParams()
    params.model.path = path
    params.model_alias = {alias}
    params.n_ctx = 2048
    params.n_parallel = 1
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.verbosity = -1
    server = xllamacpp.Server(params)  # serves HTTP from its own threads
    print(f"serving {server.listening_address}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
