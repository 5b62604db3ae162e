"""The `matta-rec` command line: help texts, TensorFlow log noise, fix hints, overlap warning."""

import dataclasses
import importlib
import json
import os
import re
import subprocess
import sys
import typing

import pytest
import yaml

from matta_rec.cli._hints import for_command
from matta_rec.cli.evaluate import overlap_warnings
from matta_rec.cli.main import COMMANDS, build_parser, main
from train_testlib import tiny_config, write_logs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A TensorFlow C++ log line: "I0000 00:00:1796073038.996932   10882 port.cc:153] ..."
# (absl) or "2024-01-01 12:00:00.123456: I tensorflow/..." (older TensorFlow).
_TF_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+:\d+\]|"
                     r"^\S*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] ", re.M)
_TF_NOISE = ("cuInit", "oneDNN", "TF_ENABLE_ONEDNN_OPTS", "absl::InitializeLog",
             "rebuild TensorFlow", "cuda drivers")


def _tf_noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if _TF_LOG.search(line) or any(word in line for word in _TF_NOISE)]


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


# ----------------------------------------------------------------- --help
def test_top_level_help_lists_each_modules_help_without_importing_tensorflow():
    code = ("import sys\nfrom matta_rec.cli.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('IMPORTED', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED []" in proc.stdout
    flat = " ".join(proc.stdout.split())  # argparse wraps long help lines
    for name, module_name in COMMANDS.items():
        assert f" {name} {importlib.import_module(module_name).HELP} " in flat, name
    assert "--verbose" in proc.stdout


def _expected_keys(cls, prefix=""):
    """(dotted key, default) of every leaf option, walked independently of the CLI."""
    from matta_rec.models.config import ModelConfig
    from matta_rec.utils.config import to_dict

    hints = typing.get_type_hints(cls)
    default = cls()
    out = []
    for field in dataclasses.fields(cls):
        if field.name == "source":
            continue
        key = prefix + field.name
        if key == "model":
            out += _expected_keys(ModelConfig, "model.")
        elif dataclasses.is_dataclass(hints[field.name]):
            out += _expected_keys(hints[field.name], key + ".")
        else:
            out.append((key, to_dict(getattr(default, field.name))))
    return out


def test_train_help_lists_every_config_and_model_key_with_its_default(capsys):
    from matta_rec.training.config import RunConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    keys = _expected_keys(RunConfig)
    assert any(k.startswith("model.") for k, _ in keys) and len(keys) > 30
    for key, default in keys:
        match = re.search(rf"^\s+{re.escape(key)} = (.+)$", text, re.M)
        assert match, f"{key} missing from train --help"
        assert yaml.safe_load(match.group(1)) == default, (key, match.group(1), default)
    assert "model = {...}" not in text
    assert "debug." not in text
    for markup in ("``", ":class:", ":func:", ":meth:", ":mod:"):
        assert markup not in text, markup


def test_verbose_is_accepted_before_and_after_the_command():
    parser = build_parser(load="generate")
    assert parser.parse_args(["generate", "--out", "d"]).verbose is False
    assert parser.parse_args(["--verbose", "generate", "--out", "d"]).verbose is True
    assert parser.parse_args(["generate", "--verbose", "--out", "d"]).verbose is True


# ------------------------------------------------------- TensorFlow logging
@pytest.mark.slow
def test_train_prints_no_tensorflow_log_lines_unless_verbose(tmp_path):
    logs = str(tmp_path / "logs")
    write_logs(logs, shards=2, rows=128)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(**{"checkpoint.every_rows": None})))
    runs = {}
    for verbose in (False, True):
        cmd = [sys.executable, "-m", "matta_rec.cli.main"] + (["--verbose"] if verbose else []) + [
            "train", "--data", logs, "--schema", os.path.join(logs, "schema.yaml"),
            "--out", str(tmp_path / f"run-{verbose}"), "--config", str(config)]
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads(proc.stdout.strip().splitlines()[-1])["rows_trained"] == 256
        runs[verbose] = proc.stderr
    assert _tf_noise(runs[False]) == [], runs[False]
    # The control: TensorFlow does log on this machine, so the check above could fail.
    assert _tf_noise(runs[True]), runs[True]
    assert "[matta-rec train] trained 256 rows" in runs[False]  # the command's own lines stay


# ------------------------------------------------------------- fix hints
QUARANTINE = "re-write the shard, or pass --set data.skip_bad_shards=true to quarantine it"


@pytest.mark.parametrize("command,expected", [
    ("train", QUARANTINE),
    ("ablate", QUARANTINE),
    ("evaluate", "re-write the shard, or leave it out of --data"),
    ("export", "re-write the shard, or leave it out of --data"),
    ("inspect-data", "re-write the shard, or run matta-rec train with "
                     "--set data.skip_bad_shards=true to quarantine it"),
])
def test_fix_hints_are_valid_for_the_printing_command(command, expected):
    assert for_command(QUARANTINE, command) == expected
    assert for_command("lower --set data.holdout_shards=N", "evaluate") == \
        "lower matta-rec train --set data.holdout_shards=N"


def _empty_shard_logs(tmp_path):
    logs = tmp_path / "logs"
    write_logs(str(logs), shards=2, rows=64)
    empty = logs / "dt=2026-01-01" / "hour=00" / "part-1.parquet"
    empty.write_bytes(b"")
    return logs, empty


def test_train_and_inspect_data_give_the_quarantine_hint_in_their_own_syntax(tmp_path, capsys):
    logs, empty = _empty_shard_logs(tmp_path)
    schema = str(logs / "schema.yaml")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    assert main(["train", "--data", str(logs), "--schema", schema, "--out", str(tmp_path / "run"),
                 "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "--set data.skip_bad_shards=true" in err
    assert "=True" not in err and "matta-rec train --set" not in err

    assert main(["inspect-data", "--data", str(logs)]) == 1
    out = capsys.readouterr().out
    assert str(empty) in out
    assert "run matta-rec train with --set data.skip_bad_shards=true" in out
    assert "=True" not in out


# ------------------------------------------------ evaluate overlap warning
def _fake_run(path, trained, root=None, holdout=()):
    """A run directory as far as the overlap check and model resolution look."""
    os.makedirs(path)
    for name in ("config.yaml", "preprocessing.json"):
        open(os.path.join(path, name), "w").close()
    metrics = {"holdout": {"shards": list(holdout)}, "input": {"train_shards": trained}}
    if root is not None:
        metrics["input"]["root"] = root
    with open(os.path.join(path, "metrics.json"), "w") as handle:
        json.dump(metrics, handle)
    return str(path)


@pytest.fixture
def eval_logs(tmp_path):
    logs = str(tmp_path / "logs")
    write_logs(logs, shards=6, rows=16)
    names = [f"dt=2026-01-01/hour={h:02d}/part-0.parquet" for h in range(6)]
    return logs, os.path.join(logs, "schema.yaml"), names


def test_overlap_warning_names_the_first_shards_and_the_count(eval_logs, tmp_path):
    logs, schema, names = eval_logs
    run = _fake_run(tmp_path / "run", names[:5], root=logs, holdout=names[5:])
    (line,) = overlap_warnings(logs, schema, [run, run])  # one line per run
    assert "\n" not in line and line.startswith("matta-rec evaluate: warning: 5 of the 6 shard(s)")
    assert f"run {run} ({names[0]}, {names[1]}, {names[2]} and 2 more)" in line
    assert names[3] not in line


def test_no_warning_on_held_out_or_other_logs_or_unrecorded_runs(eval_logs, tmp_path):
    logs, schema, names = eval_logs
    held_out = _fake_run(tmp_path / "a", names[:5], root=logs, holdout=names[5:])
    assert overlap_warnings(os.path.join(logs, "dt=2026-01-01", "hour=05"), schema, [held_out]) == []
    other = str(tmp_path / "other")
    write_logs(other, shards=6, rows=16)  # same names, other files
    assert overlap_warnings(other, schema, [held_out]) == []
    unrecorded = tmp_path / "b"
    os.makedirs(unrecorded)
    (unrecorded / "metrics.json").write_text(json.dumps({"train_shards": 5}))
    assert overlap_warnings(logs, schema, [str(unrecorded)]) == []


def test_without_the_runs_root_names_and_sizes_are_compared(eval_logs, tmp_path):
    logs, schema, names = eval_logs
    size = os.path.getsize(os.path.join(logs, *names[1].split("/")))
    run = _fake_run(tmp_path / "run", [names[0], {"name": names[1], "bytes": size},
                                       {"name": names[2], "bytes": size + 1}])
    (line,) = overlap_warnings(os.path.join(logs, "dt=2026-01-01"), schema, [run])
    # Relative to the evaluation root; the shard of another size is not the trained one.
    assert "2 of the 6 shard(s)" in line and "(hour=00/part-0.parquet, hour=01/part-0.parquet)" in line


def test_evaluate_warns_before_scoring_for_runs_behind_models_and_baseline(eval_logs, tmp_path,
                                                                          capsys):
    logs, schema, names = eval_logs
    run = _fake_run(tmp_path / "run", names[:2], root=logs)
    base = _fake_run(tmp_path / "base", [], root=logs)
    main(["evaluate", "--data", logs, "--models", run, "--baseline", base, "--n-boot", "2"])
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and f"trained on by run {run} " in warnings[0]


def test_inspect_data_and_evaluate_look_for_the_schema_the_same_way(tmp_path, capsys):
    # Neither finds DATA/schema.yaml: both name the file they looked for and the option.
    logs = tmp_path / "logs"
    logs.mkdir()
    expected = f"no --schema given and {logs / 'schema.yaml'} does not exist; pass --schema FILE"
    assert main(["inspect-data", "--data", str(logs)]) == 2
    assert expected in capsys.readouterr().err
    assert main(["evaluate", "--data", str(logs), "--models", "m", "--baseline", "b"]) == 2
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--top", "--max-listed"])
def test_inspect_data_counts_are_checked_when_parsed(option, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["inspect-data", "--data", "logs", option, "-1"])
    assert exc.value.code == 2
    assert f"argument {option}: expected an integer >= 0, got -1" in capsys.readouterr().err
