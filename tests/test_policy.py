from mimir.runtime.policy import Candidate, Footprint, Limits, expired, fits, next_expiry, pick_victims

MiB = 1024 * 1024


def c(mid, ram=0, gpu=0, last=0.0, in_use=0, pinned=False):
    return Candidate(mid, Footprint(ram * MiB, gpu * MiB), last, in_use, pinned)


def test_fits_checks_both_dimensions():
    limits = Limits(100 * MiB, 50 * MiB)
    assert fits(Footprint(50 * MiB), Footprint(50 * MiB), limits)
    assert not fits(Footprint(51 * MiB), Footprint(50 * MiB), limits)
    assert not fits(Footprint(gpu_bytes=60 * MiB), Footprint(), limits)
    assert fits(Footprint(gpu_bytes=60 * MiB), Footprint(), Limits(100 * MiB))  # GPU unbudgeted


def test_pick_victims_least_recently_used_first():
    residents = [c("a", 40, last=3), c("b", 40, last=1), c("c", 10, last=2)]
    # 90 resident of 100; need 30 -> evict LRU "b" (40) and that is enough.
    assert pick_victims(Footprint(30 * MiB), residents, Limits(100 * MiB)) == ["b"]
    # need 60 -> b, then c (10 more is 60 free? 100-50=50 <60), then a
    assert pick_victims(Footprint(60 * MiB), residents, Limits(100 * MiB)) == ["b", "c"]


def test_pick_victims_never_takes_in_use_or_pinned():
    residents = [c("busy", 50, last=0, in_use=1), c("pin", 30, last=1, pinned=True), c("idle", 10, last=2)]
    assert pick_victims(Footprint(15 * MiB), residents, Limits(100 * MiB)) == ["idle"]
    assert pick_victims(Footprint(30 * MiB), residents, Limits(100 * MiB)) is None


def test_pick_victims_empty_when_it_fits():
    assert pick_victims(Footprint(10 * MiB), [c("a", 10)], Limits(100 * MiB)) == []


def test_gpu_need_does_not_evict_cpu_models():
    residents = [c("cpu", ram=50, last=0), c("gpu", gpu=40, last=1)]
    limits = Limits(100 * MiB, 50 * MiB)
    assert pick_victims(Footprint(gpu_bytes=20 * MiB), residents, limits) == ["gpu"]


def test_expired_and_next_expiry():
    residents = [c("old", 1, last=0), c("new", 1, last=9), c("busy", 1, last=0, in_use=1)]
    assert expired(residents, now=10, keep_alive_s=5) == ["old"]
    assert expired(residents, now=10, keep_alive_s=None) == []
    assert next_expiry(residents, keep_alive_s=5) == 5
