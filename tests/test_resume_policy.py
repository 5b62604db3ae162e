"""The resume policy: which config keys may change on --resume."""

import subprocess
import sys

import pytest

from matta_rec.errors import ConfigError
from matta_rec.training.config import RunConfig
from matta_rec.training.resume_policy import (
    ALLOWED_ON_RESUME,
    UNSET,
    Change,
    check_resume,
    config_changes,
    flatten,
    is_allowed,
)

BASE = {
    "model": {"d_model": 16, "mlp_units": [32, 16]},
    "optimizer": {"name": "adam", "settings": {"learning_rate": 0.001}},
    "batch_size": 256,
    "data": {"holdout_fraction": 0.1},
}


def _configs(**sets):
    """(the run's config, the same with ``sets`` applied) in RunConfig.to_dict() form."""
    old = RunConfig.from_dict(BASE)
    new = RunConfig.from_dict(BASE, overrides=sets)
    return old.to_dict(), new.to_dict()


def _check(sets, schedule_depends_on_length=False):
    old, new = _configs(**sets)
    return check_resume(old, new, schedule_depends_on_length=schedule_depends_on_length,
                        source="run/config.yaml")


def test_nothing_changed_is_no_change():
    assert _check({}) == []


@pytest.mark.parametrize(
    "key, value",
    [
        ("checkpoint.every_rows", 500),
        ("checkpoint.keep", 7),
        ("metrics.window_rows", 2000),
        ("metrics.tensorboard", False),
        ("data.skip_bad_shards", True),
        ("data.max_rows", 12345),
        ("epochs", 3),
        ("distribute.collective_timeout_s", 60.0),
    ],
)
def test_each_allowed_family_is_returned(key, value):
    old_value = flatten(RunConfig.from_dict(BASE).to_dict())[key]
    (change,) = _check({key: value})
    assert change == Change(key, old_value, value)
    assert change.to_dict() == {"key": key, "old": old_value, "new": value}


@pytest.mark.parametrize(
    "key, value, shown",
    [
        ("model.d_model", 32, "model.d_model: 16 -> 32"),
        ("model.mlp_units", [64, 16], "model.mlp_units: [32, 16] -> [64, 16]"),
        ("batch_size", 128, "batch_size: 256 -> 128"),
        ("optimizer.settings.learning_rate", 0.01, "optimizer.settings.learning_rate: 0.001 -> 0.01"),
        ("optimizer.name", "sgd", "optimizer.name: adam -> sgd"),
        ("seed", 1, "seed: 0 -> 1"),
        ("mode", "student", "mode: matta -> student"),
        ("loss.ramp.delay_steps", 10, "loss.ramp.delay_steps: 0 -> 10"),
        ("data.holdout_fraction", 0.2, "data.holdout_fraction: 0.1 -> 0.2"),
        ("data.stats_rows", 10, "data.stats_rows: 50000 -> 10"),
    ],
)
def test_a_refused_change_names_the_key_old_and_new(key, value, shown):
    with pytest.raises(ConfigError) as info:
        _check({key: value})
    message = str(info.value)
    assert message.startswith("run/config.yaml: --resume cannot change 1 key of the run's config: ")
    assert shown in message
    assert "Fix: start a new --out, or drop these changes" in message


def test_several_refused_keys_in_one_message_allowed_ones_not_listed():
    with pytest.raises(ConfigError) as info:
        _check({"batch_size": 128, "model.d_model": 8, "optimizer.settings.learning_rate": 0.1,
                "checkpoint.keep": 9})
    message = str(info.value)
    assert "cannot change 3 keys" in message
    listed = message.split(": ", 2)[2].split(". Fix")[0].split("; ")
    assert listed == ["batch_size: 256 -> 128", "model.d_model: 16 -> 8",
                      "optimizer.settings.learning_rate: 0.001 -> 0.1"]
    assert "checkpoint.keep: 3" not in message


@pytest.mark.parametrize("key, value", [("epochs", 2), ("data.max_rows", 1000)])
def test_run_length_is_refused_when_the_schedule_depends_on_it(key, value):
    assert len(_check({key: value}, schedule_depends_on_length=False)) == 1
    with pytest.raises(ConfigError, match="depends on the run's length") as info:
        _check({key: value}, schedule_depends_on_length=True)
    assert f"{key}: " in str(info.value)
    # the other allowed keys stay allowed
    assert [c.key for c in _check({"metrics.window_rows": 10}, schedule_depends_on_length=True)] == [
        "metrics.window_rows"
    ]


def test_nested_settings_compare_leaf_by_leaf_and_unset_sides_show():
    old = {"optimizer": {"name": "adam", "settings": {"learning_rate": 0.001}}, "model": {}}
    new = {"optimizer": {"name": "adam", "settings": {"learning_rate": 0.001, "beta_1": 0.8}},
           "model": {"d_model": 8}}
    changes = config_changes(old, new)
    assert [str(c) for c in changes] == [
        "model.d_model: (not set) -> 8",
        "optimizer.settings.beta_1: (not set) -> 0.8",
    ]
    assert changes[0].old is UNSET and changes[0].to_dict()["old"] is None
    with pytest.raises(ConfigError, match="optimizer.settings.beta_1: \\(not set\\) -> 0.8"):
        check_resume(old, new, schedule_depends_on_length=False)


def test_values_compare_by_value_not_spelling():
    assert config_changes({"batch_size": 256, "lr": 0.001}, {"batch_size": 256.0, "lr": 1e-3}) == []
    assert config_changes({"data": {"skip_bad_shards": True}}, {"data": {"skip_bad_shards": 1}}) != []
    assert str(Change("data.max_rows", None, 10)) == "data.max_rows: null -> 10"
    assert str(Change("metrics.progress", True, False)) == "metrics.progress: true -> false"


def test_is_allowed_matches_whole_sections_only():
    assert is_allowed("checkpoint.every_steps", schedule_depends_on_length=False)
    assert not is_allowed("checkpoints.keep", schedule_depends_on_length=False)
    assert not is_allowed("data.holdout_shards", schedule_depends_on_length=False)
    assert not is_allowed("metrics", schedule_depends_on_length=False)
    assert is_allowed("follow.poll_interval_s", schedule_depends_on_length=False)
    assert is_allowed("publish.tolerance", schedule_depends_on_length=False)
    assert set(ALLOWED_ON_RESUME) == {"checkpoint.*", "metrics.*", "follow.*", "publish.*",
                                      "data.skip_bad_shards", "distribute.collective_timeout_s",
                                      "data.max_rows", "epochs",
                                      "early_stopping.patience", "early_stopping.min_delta",
                                      "validation.every_rows"}
    assert not is_allowed("early_stopping.restore_best", schedule_depends_on_length=False)
    assert not is_allowed("data.valid", schedule_depends_on_length=False)


def test_argument_errors():
    with pytest.raises(TypeError, match="schedule_depends_on_length"):
        check_resume({}, {}, schedule_depends_on_length=None)
    with pytest.raises(TypeError, match="mapping"):
        flatten([1, 2])


def test_the_policy_imports_no_tensorflow():
    code = ("import sys, matta_rec.training.resume_policy; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
