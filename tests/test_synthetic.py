"""Synthetic logs: determinism, layout, schema and dtypes, label sanity, CLI."""

from __future__ import annotations

import datetime as dt
import glob
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from matta_rec.cli.main import main
from matta_rec.errors import ConfigError
from matta_rec.data.schema import Schema
from matta_rec.data.synthetic import SyntheticWorld, generate_logs, simulate

SMALL = dict(days=2, users=600, items=120)


def _shards(root, ext="parquet"):
    paths = glob.glob(os.path.join(root, "dt=*", "hour=*", f"part-*.{ext}"))
    return sorted(os.path.relpath(p, root) for p in paths)


def _table(root):
    return pa.concat_tables([pq.read_table(os.path.join(root, p)) for p in _shards(root)])


def test_same_seed_same_bytes_and_equal_to_simulate(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate_logs(a, 3000, seed=5, **SMALL)
    generate_logs(b, 3000, seed=5, **SMALL)
    assert _shards(a) == _shards(b)
    ta, tb = _table(a), _table(b)
    assert ta.equals(tb)
    # The in-memory simulation is the same rows in the same order.
    cols, _ = simulate(3000, seed=5, **SMALL)
    np.testing.assert_array_equal(ta.column("user_id").to_numpy(zero_copy_only=False), cols["user_id"])
    np.testing.assert_array_equal(ta.column("teacher_prob").to_numpy(), cols["teacher_prob"])
    vec = np.stack(ta.column("item_vec").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(vec, cols["item_vec"])


def test_different_seeds_differ():
    c1, _ = simulate(2000, seed=1, **SMALL)
    c2, _ = simulate(2000, seed=2, **SMALL)
    assert not np.array_equal(c1["user_id"], c2["user_id"])
    assert not np.allclose(c1["teacher_prob"], c2["teacher_prob"])


def test_layout_is_hourly_and_time_ordered(tmp_path):
    out = tmp_path / "logs"
    generate_logs(out, 2400, seed=0, start_date="2024-02-28", **SMALL)
    shards = _shards(out)
    assert len(shards) == 48  # 2 days x 24 hours, every hour has rows
    pattern = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/part-0\.parquet$")
    stamps = []
    for path in shards:
        m = pattern.match(path)
        assert m, path
        stamps.append(dt.datetime.fromisoformat(m.group(1)) + dt.timedelta(hours=int(m.group(2))))
    start = dt.datetime(2024, 2, 28)
    assert stamps == [start + dt.timedelta(hours=h) for h in range(48)]  # crosses into 02-29
    rows = [pq.read_metadata(os.path.join(out, p)).num_rows for p in shards]
    assert sum(rows) == 2400
    # The hour column matches the folder, and evening traffic beats the night.
    first = pq.read_table(os.path.join(out, shards[20]))
    assert set(first.column("hour").to_pylist()) == {"20"}
    assert rows[20] > 2 * rows[4]
    assert sorted(os.listdir(out)) == ["dt=2024-02-28", "dt=2024-02-29", "schema.yaml"]


def test_schema_round_trips_and_columns_have_raw_dtypes(tmp_path):
    out = tmp_path / "logs"
    returned = generate_logs(out, 1000, seed=3, **SMALL)
    schema = Schema.from_yaml(out / "schema.yaml")
    assert schema.to_dict() == returned.to_dict()
    kinds = {f.kind for f in schema.features}
    assert kinds == {"categorical", "numeric", "multi_categorical", "dense"}
    assert schema.feature("user_id").hashed and schema.feature("item_id").hashed
    assert schema.feature("user_id").buckets >= 2 * 600
    for name in ("hour", "device", "user_segment", "item_category"):
        assert schema.feature(name).learns_vocabulary
    assert schema.feature("item_popularity").normalization == "log"
    assert schema.feature("item_tags").separator == "|"
    assert schema.feature("item_vec").dim == 8
    assert schema.labels.target == "teacher_prob" and schema.labels.event == "click"
    assert schema.labels.weight is None

    table = _table(out)
    expected = {"string": pa.string(), "float32": pa.float32(), "int64": pa.int64()}
    for spec in schema.features:
        col = table.column(spec.name)
        assert col.null_count == 0, spec.name
        if spec.kind == "dense":
            assert col.type == pa.list_(pa.float32()), spec.name
            assert {len(v) for v in col.to_pylist()} == {spec.dim}
        else:
            assert col.type == expected[spec.raw_dtype], spec.name
    for label in schema.labels.columns:
        assert table.column(label).type == pa.float32()
    tags = table.column("item_tags").to_pylist()
    assert all(1 <= len(t.split("|")) <= 5 for t in tags)
    assert set(table.column("device").to_pylist()) <= {"android", "ios", "desktop", "tablet"}


def test_labels_in_range_and_click_rate():
    cols, truth = simulate(20_000, seed=11)
    teacher, click = cols["teacher_prob"], cols["click"]
    assert teacher.dtype == np.float32 and click.dtype == np.float32
    assert np.all((teacher >= 0) & (teacher <= 1)) and np.isfinite(teacher).all()
    assert set(np.unique(click)) == {0.0, 1.0}
    assert 0.07 < click.mean() < 0.13  # calibrated to ctr=0.10
    np.testing.assert_allclose(truth["true_prob"].mean(), 0.10, atol=0.01)


# The coarse-feature and heavy-tail checks need a population much larger than
# the segments and the top-10% cut; the default population is small (many
# rows per id, see default_population), so these two tests set one.
LARGE = dict(users=3000, items=600)


def test_teacher_is_strong_but_imperfect():
    cols, truth = simulate(30_000, seed=4, **LARGE)
    click = cols["click"]
    teacher_auc = roc_auc_score(click, cols["teacher_prob"])
    true_auc = roc_auc_score(click, truth["true_prob"])
    assert teacher_auc > 0.75
    # The truth knows more than the Teacher (the world's strong user x item
    # interaction makes both very predictive, so the margin is small).
    assert true_auc > teacher_auc + 0.005
    # A model of the features alone (segment x category click rate) is much weaker.
    key = np.char.add(cols["user_segment"].astype(str), cols["item_category"].astype(str))
    _, inverse = np.unique(key, return_inverse=True)
    rate = np.bincount(inverse, weights=click) / np.bincount(inverse)
    assert roc_auc_score(click, rate[inverse]) < teacher_auc - 0.1


def test_popularity_and_position_bias_are_present():
    cols, _ = simulate(30_000, seed=2, **LARGE)
    _, counts = np.unique(cols["item_id"], return_counts=True)
    counts = np.sort(counts)[::-1]
    top = counts[: max(1, len(counts) // 10)].sum() / counts.sum()
    assert top > 0.35  # heavy-tailed exposure: top 10% of items
    _, per_user = np.unique(cols["user_id"], return_counts=True)
    assert per_user.max() > 20 * np.median(per_user)  # power-law activity
    pos, click = cols["position"], cols["click"]
    # -0.45 log(position) on the logit; with the strong user x item term most
    # rows are far from 0.5, so the click-rate ratio is smaller than exp(0.45 log 5).
    assert click[pos == 1].mean() > 1.1 * click[pos >= 5].mean()


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="rows"):
        generate_logs(tmp_path / "x", 0, seed=0)
    with pytest.raises(ConfigError, match="format"):
        generate_logs(tmp_path / "x", 10, seed=0, format="xml")
    with pytest.raises(ConfigError, match="start_date"):
        generate_logs(tmp_path / "x", 10, seed=0, start_date="Jan 1")
    with pytest.raises(ConfigError, match="ctr"):
        SyntheticWorld(0, users=100, items=100, ctr=0.9)
    with pytest.raises(ConfigError, match="seed"):
        generate_logs(tmp_path / "x", 10, seed=-1)
    assert not (tmp_path / "x").exists()


def test_rows_per_file_splits_an_hour_in_order(tmp_path):
    out = tmp_path / "logs"
    generate_logs(out, 480, seed=0, days=1, users=200, items=100, rows_per_file=6)
    hour20 = sorted(glob.glob(os.path.join(out, "dt=2024-01-01", "hour=20", "part-*.parquet")))
    assert len(hour20) >= 4
    assert [os.path.basename(p) for p in hour20] == [f"part-{i}.parquet" for i in range(len(hour20))]
    assert sum(pq.read_metadata(p).num_rows for p in _shards_abs(out)) == 480


def _shards_abs(root):
    return [os.path.join(root, p) for p in _shards(root)]


@pytest.mark.parametrize("fmt", ["csv", "tfrecord"])
def test_other_formats(tmp_path, fmt):
    out = tmp_path / fmt
    generate_logs(out, 300, seed=1, days=1, users=100, items=60, format=fmt)
    shards = _shards(out, fmt)
    assert len(shards) == 24 and all(s.endswith(f"part-0.{fmt}") for s in shards)
    if fmt == "csv":
        import pyarrow.csv as pcsv

        table = pcsv.read_csv(os.path.join(out, shards[0]))
        assert set(Schema.from_yaml(out / "schema.yaml").columns) <= set(table.column_names)


def test_cli_refuses_non_empty_dir_without_overwrite(tmp_path, capsys):
    out = tmp_path / "logs"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["generate", "--out", str(out), "--rows", "200", "--days", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err
    assert os.listdir(out) == ["notes.txt"]
    argv = ["generate", "--out", str(out), "--rows", "200", "--days", "1", "--seed", "3",
            "--users", "100", "--items", "50", "--overwrite", "--quiet"]
    assert main(argv) == 0
    assert "wrote 200 rows in 24 parquet shards" in capsys.readouterr().out
    assert (out / "notes.txt").read_text() == "keep me"
    first = _table(out)
    # --overwrite replaces an earlier generation instead of mixing with it.
    argv[argv.index("--rows") + 1] = "100"
    assert main(argv) == 0
    assert _table(out).num_rows == 100 and first.num_rows == 200


def test_cli_rejects_bad_numbers(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--out", str(tmp_path / "o"), "--rows", "-5"])
    assert exc.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_default_population_sees_every_id_many_times():
    # Production-like regime: hundreds of impressions per user and item.
    from matta_rec.data.synthetic import default_population

    users, items = default_population(100_000)
    assert (users, items) == (316, 158)
    assert 100_000 / users > 300 and 100_000 / items > 600
    cols, _ = simulate(100_000, seed=0)
    _, per_user = np.unique(cols["user_id"], return_counts=True)
    assert np.median(per_user) >= 20 and per_user.max() > 20 * np.median(per_user)


def test_a_draw_is_new_rows_of_the_same_world(tmp_path):
    log, log_truth = simulate(3000, seed=5, **SMALL)
    other, other_truth = simulate(3000, seed=5, draw=1, **SMALL)
    again, _ = simulate(3000, seed=5, draw=1, **SMALL)
    # Different rows (the random streams differ) ...
    assert not np.array_equal(log["user_id"], other["user_id"])
    np.testing.assert_array_equal(other["teacher_prob"], again["teacher_prob"])
    # ... of the same world: an id keeps its attributes, the hours keep their counts.
    for key, attr in (("user_id", "user_age"), ("item_id", "item_tags"), ("item_id", "item_category")):
        first = dict(zip(log[key], log[attr]))
        assert all(first[k] == v for k, v in zip(other[key], other[attr]) if k in first)
    np.testing.assert_array_equal(np.bincount(log_truth["hour"]), np.bincount(other_truth["hour"]))
    # The files equal the in-memory draw; draw 0 is the log itself.
    generate_logs(tmp_path / "d1", 3000, seed=5, draw=1, **SMALL)
    np.testing.assert_array_equal(_table(tmp_path / "d1").column("teacher_prob").to_numpy(),
                                  other["teacher_prob"])
    with pytest.raises(ConfigError, match="draw"):
        generate_logs(tmp_path / "bad", 10, seed=0, draw=-1)


def test_fixed_preset_is_train_valid_and_a_separate_test_draw(tmp_path):
    from matta_rec.data.synthetic import FIXED_PRESET, generate_fixed_dataset

    assert FIXED_PRESET == {"rows": 50_000, "test_rows": 50_000, "days": 4,
                            "valid_fraction": 0.1, "max_passes": 30}
    out = tmp_path / "fixed"
    paths = generate_fixed_dataset(out, seed=0)
    assert sorted(os.listdir(out)) == ["test", "train", "valid"] and paths["valid_shards"] == 10
    train, valid, test = (_shards(out / name) for name in ("train", "valid", "test"))
    assert len(train) == 86 and len(test) == 96
    # valid/ is the last 10% of the training log's shards, in time order after train/.
    assert valid == [f"dt=2024-01-04/hour={h}/part-0.parquet" for h in range(14, 24)]
    assert max(train) < min(valid)
    rows = {name: _table(out / name).num_rows for name in ("train", "valid", "test")}
    assert rows["train"] + rows["valid"] == 50_000 and rows["test"] == 50_000
    log, _ = simulate(50_000, seed=0)
    both = pa.concat_tables([_table(out / "train"), _table(out / "valid")])
    np.testing.assert_array_equal(both.column("teacher_prob").to_numpy(), log["teacher_prob"])
    drawn, _ = simulate(50_000, seed=0, draw=1)
    np.testing.assert_array_equal(_table(out / "test").column("teacher_prob").to_numpy(),
                                  drawn["teacher_prob"])
    for name in ("train", "valid", "test"):
        assert Schema.from_yaml(out / name / "schema.yaml").to_dict() == \
            Schema.from_yaml(out / "train" / "schema.yaml").to_dict()
    with pytest.raises(ConfigError, match="not empty"):
        generate_fixed_dataset(out, seed=0)


def test_cli_preset_fixes_its_sizes(tmp_path, capsys):
    out = tmp_path / "fixed"
    assert main(["generate", "--out", str(out), "--preset", "fixed", "--rows", "500"]) == 2
    err = capsys.readouterr().err
    assert "--preset fixed fixes the sizes" in err and "leave out --rows" in err
    assert not out.exists()
    assert main(["generate", "--out", str(out), "--preset", "fixed", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "train/, valid/ (the last 10 shards of the training log) and test/" in text
    assert sorted(os.listdir(out)) == ["test", "train", "valid"]
