"""PublicationGate: candidates are staged, scored against the served version on
the next rows, and published only when not worse."""

import json
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from matta_rec.data.reader import LogStream
from matta_rec.errors import ConfigError
from matta_rec.export.gate import PublicationGate
from matta_rec.training import load_run, train_run
from matta_rec.training.run_dir import RunPaths

sys.path.insert(0, os.path.dirname(__file__))
from train_testlib import tiny_config, write_logs  # noqa: E402


class _Negated(keras.Model):
    """The Student with its logit negated: the worst ranking of the same model."""

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner

    def call(self, features, training=False):
        return -self.inner(features, training=training)


class _Family:
    def __init__(self, model, negate=False):
        self.model, self.negate = model, negate

    def extract(self, spec):
        sub = self.model.extract(spec)
        return _Negated(sub, name="negated") if self.negate else sub


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    logs = str(root / "logs")
    write_logs(logs, shards=4, rows=300)
    out = str(root / "run")
    train_run(tiny_config(**{"data.holdout_shards": 1}), logs, os.path.join(logs, "schema.yaml"),
              out)
    return logs, out


def _gate(tmp_path, schema, **kwargs):
    settings = dict(staging_dir=str(tmp_path / "stage"),
                    decisions_path=str(tmp_path / "publications.jsonl"),
                    every_rows=100, eval_rows=200)
    settings.update(kwargs)
    return PublicationGate(str(tmp_path / "exports"), schema, **settings)


def _feed(gate, stream):
    for features, labels, rows_end in stream.dataset(with_position=True):
        decision = gate.observe(features, labels, int(rows_end))
        if decision is not None:
            return decision
    raise AssertionError("the window never filled")


def test_first_candidate_published_worse_one_held_back_better_one_published(trained, tmp_path):
    logs, out = trained
    run = load_run(out)
    example = RunPaths(out).example_rows()
    gate = _gate(tmp_path, run.schema)
    assert gate.due(100) and not gate.due(99)

    gate.start_candidate(_Family(run.model), 100, example)  # nothing served: published at once
    assert not gate.evaluating
    assert os.path.isdir(tmp_path / "exports" / "student" / "1" / "variables")

    gate.start_candidate(_Family(run.model, negate=True), 200, example)
    assert gate.evaluating and not os.path.exists(tmp_path / "exports" / "student" / "2")
    assert not gate.due(400)  # one candidate at a time
    held = _feed(gate, LogStream(logs, run.schema, batch_size=64))
    assert held["decision"] == "held_back" and held["published_version"] == 1
    assert held["candidate_auc_loss"] == pytest.approx(1 - held["published_auc_loss"], abs=1e-9)
    assert held["window"]["rows"] == 200 and held["label"] == "event"
    assert os.listdir(tmp_path / "exports" / "student") == ["1"]  # TF Serving still serves 1
    assert not os.listdir(tmp_path / "stage")  # the held-back candidate is gone

    gate.start_candidate(_Family(run.model), 300, example)  # the same model: not worse
    published = _feed(gate, LogStream(logs, run.schema, batch_size=64))
    assert published["decision"] == "published" and published["version"] == 2
    assert published["candidate_auc_loss"] == pytest.approx(published["published_auc_loss"])

    records = [json.loads(line) for line in open(tmp_path / "publications.jsonl")]
    assert [r["decision"] for r in records] == ["published", "held_back", "published"]
    assert [r["rows_trained"] for r in records] == [100, 200, 300]
    served = tf.saved_model.load(str(tmp_path / "exports" / "student" / "2"))
    assert "serving_default" in served.signatures

    again = _gate(tmp_path, run.schema)  # a resumed run keeps the cadence on record
    assert not again.due(399) and again.due(400)


def test_settings_are_validated(trained, tmp_path):
    _, out = trained
    schema = load_run(out).schema
    with pytest.raises(ConfigError, match="eval_rows"):
        _gate(tmp_path, schema, eval_rows=0)
    with pytest.raises(ConfigError, match="tolerance"):
        _gate(tmp_path, schema, tolerance=-0.1)
    with pytest.raises(ConfigError, match="inside the export base"):
        _gate(tmp_path, schema, staging_dir=str(tmp_path / "exports" / "stage"))
