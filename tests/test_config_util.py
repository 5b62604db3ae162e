"""matta_rec.utils.config: dataclasses from YAML with errors naming the key."""

import dataclasses

import pytest

from matta_rec.errors import ConfigError
from matta_rec.utils.config import from_dict, to_dict


@dataclasses.dataclass
class Inner:
    units: tuple[int, ...] = (8, 4)
    rate: float = 0.1


@dataclasses.dataclass
class Outer:
    name: str = "x"
    inner: Inner = dataclasses.field(default_factory=Inner)
    flag: bool = False
    limit: int | None = None


def test_nested_build_and_round_trip():
    cfg = from_dict(Outer, {"name": "y", "inner": {"units": [3, 2, 1], "rate": 1}, "limit": 5})
    assert cfg.inner.units == (3, 2, 1)
    assert cfg.inner.rate == 1.0 and isinstance(cfg.inner.rate, float)
    assert from_dict(Outer, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "data,key,words",
    [
        ({"inner": {"unitz": [1]}}, "inner", "unknown option"),
        ({"inner": {"units": [1, "a"]}}, "inner.units[1]", "expected an integer"),
        ({"flag": "yes"}, "flag", "expected true or false"),
        ({"limit": 1.5}, "limit", "does not fit"),
    ],
)
def test_errors_name_source_and_key(data, key, words):
    with pytest.raises(ConfigError) as info:
        from_dict(Outer, data, source="run.yaml")
    assert "run.yaml" in str(info.value)
    assert f"key '{key}'" in str(info.value)
    assert words in str(info.value)
