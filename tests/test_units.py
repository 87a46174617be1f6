import pytest

from mimir.units import format_bytes, parse_duration, parse_size


@pytest.mark.parametrize(
    "text,expected",
    [("1.5GiB", 1610612736), ("512MiB", 512 * 1024**2), ("2GB", 2 * 10**9), ("100", 100), (4096, 4096), ("1 kib", 1024)],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "lots", "1.5 parsecs", "-3GiB", True])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize("text,expected", [("5m", 300.0), ("30s", 30.0), ("250ms", 0.25), (12, 12.0), ("1h", 3600.0)])
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


def test_format_bytes():
    assert format_bytes(None) == "-"
    assert format_bytes(512) == "512B"
    assert format_bytes(1536) == "1.5KiB"
    assert format_bytes(3 * 1024**3) == "3.0GiB"
