"""export_run / `matta-rec export` from a tiny trained run (end to end)."""

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from export_testlib import make_rows, run_blocked_loader, train_tiny_run  # noqa: E402

from matta_rec.cli.main import main  # noqa: E402
from matta_rec.export import ExportError, export_run, read_warmup  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_and_export(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("export_run"))
    run_dir, logs = train_tiny_run(tmp)
    base = os.path.join(tmp, "exports")
    code = main(["export", "--run", run_dir, "--out", base, "--sizes", "student,wnw:1,ta",
                 "--data", logs, "--warmup-rows", "40", "--latency-repeats", "3"])
    assert code == 0
    return tmp, run_dir, logs, base


def _manifest(base):
    with open(os.path.join(base, "manifest.json")) as f:
        return json.load(f)


def test_manifest_lists_every_size(run_and_export):
    from matta_rec.training import load_run

    _, run_dir, _, base = run_and_export
    manifest = _manifest(base)
    family = {i.name: i for i in load_run(run_dir).model.list_submodels()}
    entries = {e["name"]: e for e in manifest["sizes"]}
    assert sorted(entries) == ["student", "ta", "wnw-1"]
    assert manifest["version"] == 1 and manifest["run"] == os.path.abspath(run_dir)
    for name, entry in entries.items():
        info = family[entry["spec"]]
        assert entry["version"] == 1
        assert os.path.isdir(os.path.join(base, entry["path"]))
        assert entry["params"] == info.params and entry["flops"] == info.flops
        # Physically small: the SavedModel holds exactly the sliced weights.
        assert entry["saved_params"] == entry["params"]
        assert entry["size_bytes"] > 0
        assert entry["run"] == os.path.abspath(run_dir)
        for batch in ("1", "256"):
            assert entry["latency"][batch]["median_ms"] > 0
            assert entry["latency"][batch]["repeats"] == 3
        assert entry["latency_ms"] == entry["latency"]["1"]["median_ms"]
    assert entries["student"]["params"] < entries["wnw-1"]["params"] < entries["ta"]["params"]
    # Sizes are listed by FLOPs.
    assert [e["flops"] for e in manifest["sizes"]] == sorted(e["flops"] for e in manifest["sizes"])


def test_versions_serve_raw_rows_without_matta_rec(run_and_export):
    """Each exported size, loaded where matta_rec cannot be imported, gives
    the in-process model's probabilities."""
    import tensorflow as tf

    from matta_rec.training import load_run

    tmp, run_dir, _, base = run_and_export
    model = load_run(run_dir).model
    rows = make_rows(20, seed=40)
    rows["hour"][0] = "never-seen"
    rows["tags"][1] = ""
    versions = {e["spec"]: os.path.join(base, e["path"]) for e in _manifest(base)["sizes"]}
    out_dir = os.path.join(tmp, "loader")
    os.makedirs(out_dir, exist_ok=True)
    report = run_blocked_loader(list(versions.values()), rows, out_dir)
    assert report["matta_rec_loaded"] is False
    feeds = {k: tf.constant(v) for k, v in rows.items()}
    nested = model(feeds)
    expected = {
        "student": nested["student"].numpy(),
        "ta": nested["ta"].numpy(),
        "wnw:1": model.extract("wnw:1")(feeds).numpy(),
    }
    inputs = None
    for spec, path in versions.items():
        entry = report["versions"][path]
        prob = 1 / (1 + np.exp(-expected[spec].astype(np.float64)))
        np.testing.assert_allclose(entry["probability"], prob, atol=1e-5)
        np.testing.assert_allclose(entry["example_probability"], prob, atol=1e-5)
        assert all(v is not None for v in entry["errors"].values()), entry["errors"]
        inputs = inputs or entry["inputs"]
        assert entry["inputs"] == inputs  # identical signature for every size


def test_warmup_holds_real_stream_rows(run_and_export):
    from matta_rec.data.reader import LogStream
    from matta_rec.export.warmup import request_inputs
    from matta_rec.training import load_run

    _, run_dir, logs, base = run_and_export
    schema = load_run(run_dir).schema
    first, _ = next(LogStream(logs, schema, batch_size=40).iter_numpy())
    records = read_warmup(os.path.join(base, "ta", "1"))
    assert records
    for record in records:
        assert record.predict_log.request.model_spec.name == "ta"
        inputs = request_inputs(record)
        n = len(inputs["age"])
        starts = [i for i in range(40 - n + 1)
                  if np.array_equal(first["item_id"][i:i + n], inputs["item_id"])]
        assert starts, "warmup rows are not rows of the stream"
        np.testing.assert_allclose(inputs["vec"], first["vec"][starts[0]:starts[0] + n])


def test_saved_model_cli_runs_a_version(run_and_export):
    """The TF1-style loader (the one TF Serving's C++ side mirrors) serves it."""
    tmp, _, _, base = run_and_export
    rows = make_rows(3, seed=41)
    npz = os.path.join(tmp, "cli_inputs.npz")
    np.savez(npz, **{k: (v.astype(bytes) if v.dtype.kind == "U" else v) for k, v in rows.items()})
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    inputs = ";".join(f"{k}={npz}[{k}]" for k in rows)
    proc = subprocess.run(
        [cli, "run", "--dir", os.path.join(base, "student", "1"), "--tag_set", "serve",
         "--signature_def", "serving_default", "--inputs", inputs],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Result for output key probability" in proc.stdout


def test_reexport_refused_then_next_version(run_and_export, capsys):
    _, run_dir, logs, base = run_and_export
    before = _manifest(base)
    code = main(["export", "--run", run_dir, "--out", base, "--sizes", "student",
                 "--version", "1", "--data", logs, "--latency-repeats", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert _manifest(base) == before
    manifest = export_run(run_dir, base, sizes=["student"], data=logs, latency_repeats=0)
    assert manifest["version"] == 2
    entries = {e["name"]: e for e in manifest["sizes"]}
    assert entries["student"]["version"] == 2 and entries["ta"]["version"] == 1
    assert "latency" not in entries["student"]
    assert sorted(os.listdir(os.path.join(base, "student"))) == ["1", "2"]


def test_bad_sizes_are_clear_errors(run_and_export):
    _, run_dir, logs, base = run_and_export
    with pytest.raises(ExportError, match="medium"):
        export_run(run_dir, base, sizes="medium", data=logs, latency_repeats=0)
    with pytest.raises(ExportError, match="cannot parse"):
        export_run(run_dir, base, sizes="wnw:x", data=logs, latency_repeats=0)
    with pytest.raises(ExportError, match="version"):
        export_run(run_dir, base, sizes="student", version=-1)
    assert not os.path.exists(os.path.join(base, "medium"))


@pytest.fixture(scope="module")
def holdout_exports(tmp_path_factory):
    """A tiny run holding its last shard out, exported with --sizes all and all-pareto."""
    from export_testlib import TINY_RUN

    tmp = str(tmp_path_factory.mktemp("export_pareto"))
    run_dir, logs = train_tiny_run(
        tmp, config={"data": dict(TINY_RUN["data"], holdout_shards=1)})
    out, printed = {}, {}
    for sizes in ("all", "all-pareto"):
        base = os.path.join(tmp, sizes)
        with contextlib.redirect_stdout(io.StringIO()) as stdout:
            code = main(["export", "--run", run_dir, "--out", base, "--sizes", sizes,
                         "--data", logs, "--warmup-rows", "8", "--latency-repeats", "0"])
        assert code == 0
        out[sizes] = _manifest(base)
        printed[sizes] = stdout.getvalue()
    return run_dir, logs, out, printed


def test_all_is_every_member_and_all_pareto_its_front(holdout_exports):
    from matta_rec.training import load_run
    from matta_rec.utils.pareto import dominates

    run_dir, _, manifests, _ = holdout_exports
    run = load_run(run_dir)
    family = [i.name for i in run.model.list_submodels()]
    every = {e["spec"]: e for e in manifests["all"]["sizes"]}
    front = {e["spec"]: e for e in manifests["all-pareto"]["sizes"]}
    assert sorted(every) == sorted(family)
    assert set(front) <= set(every) and front
    # Held-out AucLoss recorded for each exported size, measured on the held-out shard.
    assert manifests["all"]["holdout"]["rows"] == 128
    assert "held-out shard" in manifests["all"]["holdout"]["source"]
    for level in ("student", "ta"):
        recorded = run.metrics["holdout"]["target"][level]["auc_loss"]
        assert every[level]["holdout_auc_loss"] == pytest.approx(recorded, abs=1e-6)
    # The front is exactly the members no other member beats on (FLOPs, AucLoss).
    point = {s: (e["flops"], e["holdout_auc_loss"]) for s, e in every.items()}
    expected = {s for s in point if not any(dominates(point[o], point[s]) for o in point)}
    assert set(front) == expected
    table = {r["spec"]: r for r in manifests["all-pareto"]["pareto"]["members"]}
    assert sorted(table) == sorted(family)
    assert {s for s, r in table.items() if not r["dominated"]} == expected
    for spec, entry in front.items():
        assert entry["holdout_auc_loss"] == pytest.approx(every[spec]["holdout_auc_loss"])
    assert "pareto" not in manifests["all"]


def test_printed_table_shows_held_out_auc_loss_when_measured(holdout_exports, run_and_export,
                                                            capsys):
    _, _, manifests, printed = holdout_exports
    for sizes in ("all", "all-pareto"):
        header, *lines = printed[sizes].splitlines()
        assert "held-out AucLoss" in header
        for entry in manifests[sizes]["sizes"]:
            line = next(row for row in lines if row.split()[:2] == [entry["name"], entry["spec"]])
            assert f"{entry['holdout_auc_loss']:.4f}" in line.split()
    # A run without a hold-out: no such column.
    tmp, run_dir, _, _ = run_and_export
    assert main(["export", "--run", run_dir, "--out", os.path.join(tmp, "no_holdout"),
                 "--sizes", "student", "--latency-repeats", "0"]) == 0
    header, line = capsys.readouterr().out.splitlines()[:2]
    assert "AucLoss" not in header and header.split()[:2] == ["size", "spec"]
    assert line.split()[:2] == ["student", "student"]


def test_all_pareto_without_held_out_shards_is_a_clear_error(run_and_export):
    from matta_rec.export.holdout import locate_holdout
    from matta_rec.training import load_run

    tmp, run_dir, logs, _ = run_and_export
    base = os.path.join(tmp, "pareto_refused")
    with pytest.raises(ExportError, match=r"all-pareto needs the run's held-out shards: "
                       r"train with --set data.holdout_shards=N or pass --data HOLDOUT_DIR"):
        export_run(run_dir, base, sizes="all-pareto", latency_repeats=0)
    assert not os.path.exists(base)
    # --data HOLDOUT_DIR: a run that held nothing out is measured on those shards.
    run = load_run(run_dir)
    assert locate_holdout(run, None, allow_data=True) is None
    assert locate_holdout(run, logs, allow_data=False) is None
    assert locate_holdout(run, logs, allow_data=True).files == logs
