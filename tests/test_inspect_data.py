"""matta-rec inspect-data: shards, rows, label rates, feature statistics, exit status."""

import json

import numpy as np
import pytest

import reader_testlib as lib
from matta_rec.cli.inspect_data import format_summary, summarize
from matta_rec.cli.main import main
from matta_rec.data.writers import write_shard


@pytest.fixture
def logs(tmp_path):
    root = tmp_path / "logs"
    lib.write_shards(root, [6, 4], fmt="parquet")
    lib.write_shards(root, [5], fmt="csv", first_id=10, folder="dt=2026-11-02")
    schema = lib.schema()
    schema.to_yaml(root / "schema.yaml")
    allcols = [lib.columns(6, 0), lib.columns(4, 6), lib.columns(5, 10)]
    merged = {k: np.concatenate([c[k] for c in allcols]) for k in allcols[0]}
    return root, merged


def test_valid_data_prints_summary_and_exits_0(logs, capsys, tmp_path):
    root, cols = logs
    out_json = tmp_path / "summary.json"
    rc = main(["inspect-data", "--data", str(root), "--schema", str(root / "schema.yaml"),
               "--json", str(out_json)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "dt=2026-11-01/hour=00/part-0.parquet" in out and "dt=2026-11-02/hour=00/part-0.csv" in out
    assert "3 shard(s), 15 valid row(s); 0 invalid shard(s)" in out
    assert f"rate {cols['click'].mean():.4f}" in out
    assert f"mean {cols['teacher_prob'].mean():.4f}" in out
    summary = json.loads(out_json.read_text())
    assert [s["rows"] for s in summary["shards"]] == [6, 4, 5]
    assert summary["shards"][0]["event_mean"] == pytest.approx(cols["click"][:6].mean())
    age = summary["features"]["user_age"]
    assert age["mean"] == pytest.approx(cols["user_age"].mean(), rel=1e-6)
    assert age["std"] == pytest.approx(cols["user_age"].std(), rel=1e-5)
    assert (age["min"], age["max"]) == (cols["user_age"].min(), cols["user_age"].max())
    users = summary["features"]["user_id"]
    assert users["distinct"] == len(set(cols["user_id"]))
    values, counts = np.unique(cols["user_id"].astype(str), return_counts=True)
    assert users["top"][0]["count"] == counts.max()
    tags = summary["features"]["item_tags"]
    tokens = [t for v in cols["item_tags"] if v for t in v.split("|")]
    assert tags["distinct"] == len(set(tokens))
    assert tags["empty_rows"] == int(sum(v == "" for v in cols["item_tags"]))
    assert tags["tokens_per_row"]["mean"] == pytest.approx(len(tokens) / 15)
    vec = summary["features"]["item_vec"]
    assert vec["dim"] == 3 and vec["count"] == 45
    assert vec["l2_norm"]["mean"] == pytest.approx(np.linalg.norm(cols["item_vec"], axis=1).mean(), rel=1e-5)


def test_schema_defaults_to_data_dir(logs, capsys):
    root, _ = logs
    assert main(["inspect-data", "--data", str(root)]) == 0
    assert "15 valid row(s)" in capsys.readouterr().out


def test_invalid_shards_are_listed_and_exit_nonzero(logs, capsys):
    root, _ = logs
    cols = lib.columns(4, first_id=100)
    cols["teacher_prob"][2] = 1.7
    bad = write_shard(root / "dt=2026-11-03" / "part-0.parquet", cols, lib.schema())
    corrupt = root / "dt=2026-11-03" / "part-1.tfrecord"
    corrupt.write_bytes(b"\x01\x02garbage")
    rc = main(["inspect-data", "--data", str(root), "--schema", str(root / "schema.yaml")])
    captured = capsys.readouterr()
    assert rc == 1
    assert "2 invalid shard(s) (4 rows, 1 unreadable)" in captured.out
    assert f"file '{bad}', column 'teacher_prob', row 2" in captured.out
    assert str(corrupt) in captured.out and "Fix:" in captured.out
    assert "2 of 5 shard(s) are invalid" in captured.err
    # valid shards are still summarised
    assert "5 shard(s), 15 valid row(s)" in captured.out


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert main(["inspect-data", "--data", str(tmp_path / "missing"), "--schema", "x.yaml"]) == 2
    assert "schema file not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    lib.schema().to_yaml(tmp_path / "schema.yaml")
    rc = main(["inspect-data", "--data", str(tmp_path / "empty"), "--schema", str(tmp_path / "schema.yaml")])
    assert rc == 2
    assert "no shards found" in capsys.readouterr().err


def test_max_listed_hides_valid_shards_but_never_invalid_ones(tmp_path):
    root = tmp_path / "logs"
    lib.write_shards(root, [2] * 6)
    (root / "dt=2026-11-01" / "hour=99").mkdir()
    (root / "dt=2026-11-01" / "hour=99" / "part-0.csv").write_text("nothing,here\n")
    summary = summarize(str(root), lib.schema())
    text = format_summary(summary, max_listed=2)
    assert "... 4 more valid shard(s)" in text
    assert "hour=99/part-0.csv" in text and "INVALID" in text
    assert "column 'user_id'" in text  # the CSV lacks the schema's columns
    assert summary["totals"]["invalid_shards"] == 1 and summary["totals"]["rows"] == 12


def test_distinct_count_is_capped(tmp_path, monkeypatch):
    import matta_rec.cli.inspect_data as inspect_module

    monkeypatch.setattr(inspect_module, "MAX_DISTINCT", 3)
    lib.write_shards(tmp_path, [20])
    summary = summarize(str(tmp_path), lib.schema())
    slot = summary["features"]["slot"]
    assert slot["distinct"] == 3 and slot["distinct_capped"] is True
    assert "distinct 3+" in format_summary(summary)
    assert summary["features"]["user_age"]["count"] == 20  # numeric stats are not capped
