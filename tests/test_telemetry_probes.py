"""Probes on this machine, the nvidia-smi parser, and the [telemetry] settings."""

from __future__ import annotations

import sys

import psutil
import pytest

from mimir.config import settings_from_dict
from mimir.errors import ConfigError
from mimir.telemetry import CudaProbe, LogSink, NvmlProbe, ProcessProbe, SqliteSink, parse_telemetry_options, telemetry_from_settings
from mimir.core.gpu import GpuMemory, gpu_memory, parse_smi_memory, read_gpu_memory, total_gpu_bytes
from mimir.core.memory import max_rss_bytes

MiB = 1024 * 1024


def test_process_probe_agrees_with_psutil():
    probe = ProcessProbe()
    try:
        before = probe.read("before")
        block = bytearray(b"\x01") * (32 * MiB)
        after = probe.read("after")
        psutil_rss = psutil.Process().memory_info().rss
    finally:
        probe.close()
    assert "system_available_bytes" not in before
    assert after["rss_bytes"] - before["rss_bytes"] >= 30 * MiB
    assert abs(after["rss_bytes"] - psutil_rss) < 8 * MiB
    assert after["maxrss_bytes"] >= after["rss_bytes"] - 8 * MiB
    assert 0 < after["system_available_bytes"] <= psutil.virtual_memory().total
    del block


def test_high_water_mark_only_rises():
    first = max_rss_bytes()
    block = bytearray(b"\x01") * (first + 16 * MiB)
    del block
    assert max_rss_bytes() >= first + 16 * MiB


def test_cuda_probe_reads_nothing_without_cuda_and_never_imports_torch():
    had_torch = "torch" in sys.modules
    probe = CudaProbe()
    probe.begin(first_open=True)
    reading = probe.read("after")
    assert ("torch" in sys.modules) == had_torch
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        assert reading == {}
    assert probe.failed is None


def test_cuda_probe_with_cpu_torch_imported_reads_nothing():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here; covered by bench/gpu_telemetry.py")
    probe = CudaProbe()
    probe.begin(first_open=True)
    assert probe.read("before") == {} and probe.read("after") == {}
    assert probe.failed is None


def test_nvml_probe_without_a_gpu_reads_nothing():
    if read_gpu_memory():
        pytest.skip("a GPU is present")
    probe = NvmlProbe()
    assert probe.read("after") == {}
    assert gpu_memory() == [] and total_gpu_bytes() is None
    assert probe.failed is None


def test_nvidia_smi_output_is_parsed_per_device():
    text = "0, 1024, 81559\n1, 0, 81559\nnot a line\n"
    assert parse_smi_memory(text) == [GpuMemory(0, 1024 * MiB, 81559 * MiB), GpuMemory(1, 0, 81559 * MiB)]


def test_telemetry_options_defaults_and_values():
    assert parse_telemetry_options({}).sample_interval_s == 0.01
    opts = parse_telemetry_options(
        {"sample_interval": "5ms", "log": False, "store": False, "nvidia_smi": True, "trackio_project": "p"}
    )
    assert (opts.sample_interval_s, opts.log, opts.store, opts.nvidia_smi, opts.trackio_project) == (0.005, False, False, True, "p")
    assert parse_telemetry_options({"sample_interval": "off"}).sample_interval_s is None


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"sampel_interval": "5ms"}, "telemetry.sampel_interval"),
        ({"sample_interval": "fast"}, "telemetry.sample_interval"),
        ({"log": "yes"}, "telemetry.log"),
        ({"trackio_project": ""}, "telemetry.trackio_project"),
    ],
)
def test_bad_telemetry_options_name_the_key(raw, key):
    with pytest.raises(ConfigError) as info:
        parse_telemetry_options(raw)
    assert info.value.key == key


def test_telemetry_from_settings_builds_the_configured_sinks(tmp_path):
    from mimir.storage.db import Database

    settings = settings_from_dict({"telemetry": {"sample_interval": "off"}})
    with Database.open(tmp_path / "m.db") as db:
        tel = telemetry_from_settings(settings, db)
        try:
            assert [type(s) for s in tel.sinks] == [LogSink, SqliteSink]
            assert tel.sampler is None
            assert [p.name for p in tel.probes] == ["process", "cuda", "nvml"]
        finally:
            tel.close()
    quiet = telemetry_from_settings(settings_from_dict({"telemetry": {"log": False, "store": False}}))
    assert quiet.sinks == [] and quiet.sampler is not None
    quiet.close()


def test_rss_reader_follows_a_fork():
    import os

    probe = ProcessProbe()
    try:
        probe.rss()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: grow by 64 MiB, report what the reader sees
            block = bytearray(b"\x01") * (64 * MiB)
            own = psutil.Process().memory_info().rss
            os.write(w, f"{probe.rss()} {own}".encode())
            del block
            os._exit(0)
        os.close(w)
        seen, own = map(int, os.read(r, 100).split())
        os.waitpid(pid, 0)
        os.close(r)
    finally:
        probe.close()
    assert abs(seen - own) < 8 * MiB


def _cuda_ready() -> bool:
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch
        except ImportError:
            return False
    return bool(torch.cuda.is_available())


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_ready(), reason="needs CUDA")
def test_cuda_peak_shows_a_tensor_freed_inside_the_step():
    import torch

    from mimir.telemetry import Telemetry

    torch.cuda.init()
    tel = Telemetry(sample_interval_s=None)
    try:
        with tel.step("spike") as step:
            block = torch.ones(64 * MiB, dtype=torch.uint8, device="cuda")
            torch.cuda.synchronize()
            del block
    finally:
        tel.close()
    rec = step.record
    assert rec.cuda_peak_allocated_bytes - rec.cuda_allocated_before_bytes >= 64 * MiB
    assert rec.cuda_allocated_after_bytes - rec.cuda_allocated_before_bytes < 8 * MiB
    assert rec.gpu_used_after_bytes is None or rec.gpu_total_bytes >= rec.gpu_used_after_bytes
