"""The feature schema: parsing, validation messages, round trips."""

import textwrap

import pytest

from matta_rec.errors import SchemaError
from matta_rec.data.schema import Schema

ISSUE_EXAMPLE = textwrap.dedent(
    """
    features:
      user_id:   {group: user,    kind: categorical, buckets: 100000}   # hashed
      user_age:  {group: user,    kind: numeric}
      hour:      {group: context, kind: categorical, vocabulary: auto}  # learnt from the stream
      item_tags: {group: item,    kind: multi_categorical, separator: "|", buckets: 5000}
      item_vec:  {group: item,    kind: dense, dim: 16}
    labels:
      target: teacher_prob
      event: click
      weight: null
    """
)


def _write(tmp_path, text, name="schema.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_issue_example_parses(tmp_path):
    schema = Schema.from_yaml(_write(tmp_path, ISSUE_EXAMPLE))
    assert schema.feature_names == ("user_id", "user_age", "hour", "item_tags", "item_vec")
    assert schema.labels.target == "teacher_prob"
    assert schema.labels.event == "click"
    assert schema.labels.weight is None
    assert schema.columns[-2:] == ("teacher_prob", "click")
    assert schema.feature("user_id").hashed
    assert schema.feature("hour").learns_vocabulary
    assert schema.feature("item_vec").raw_shape == (16,)
    assert [f.name for f in schema.group("item")] == ["item_tags", "item_vec"]


def test_teacher_alias_and_round_trip(tmp_path):
    text = ISSUE_EXAMPLE.replace("target: teacher_prob", "teacher: teacher_prob")
    schema = Schema.from_yaml(_write(tmp_path, text))
    assert schema.labels.target == "teacher_prob"
    out = tmp_path / "again.yaml"
    schema.to_yaml(out)
    again = Schema.from_yaml(out)
    assert again.features == schema.features
    assert again.labels == schema.labels


def test_raw_signature_dtypes(tmp_path):
    import tensorflow as tf

    text = ISSUE_EXAMPLE.replace(
        "user_id:   {group: user,    kind: categorical, buckets: 100000}",
        "user_id:   {group: user,    kind: categorical, buckets: 100000, dtype: int64}",
    )
    sig = Schema.from_yaml(_write(tmp_path, text)).raw_signature()
    assert sig["user_id"].dtype == tf.int64
    assert sig["hour"].dtype == tf.string
    assert sig["user_age"].dtype == tf.float32
    assert sig["item_tags"].dtype == tf.string
    assert sig["item_vec"].shape.as_list() == [None, 16]


@pytest.mark.parametrize(
    "old,new,key,words",
    [
        ("kind: numeric}", "kind: numerik}", "features.user_age.kind", "kind must be one of"),
        ("group: user,    kind: numeric", "group: person, kind: numeric", "features.user_age.group", "group must be one of"),
        ("kind: dense, dim: 16", "kind: dense", "features.item_vec.dim", "needs 'dim"),
        ("kind: categorical, buckets: 100000}", "kind: categorical}", "features.user_id.buckets", "buckets"),
        ("buckets: 5000}", "buckets: 5000, colour: red}", "features.item_tags", "unknown key"),
        ("target: teacher_prob", "target: user_age", "labels", "both as a feature and as a label"),
        ("event: click", "event: teacher_prob", "labels", "different columns"),
    ],
)
def test_bad_schema_names_file_and_key(tmp_path, old, new, key, words):
    assert old in ISSUE_EXAMPLE
    path = _write(tmp_path, ISSUE_EXAMPLE.replace(old, new))
    with pytest.raises(SchemaError) as info:
        Schema.from_yaml(path)
    message = str(info.value)
    assert path in message
    assert key in message
    assert words in message


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(SchemaError, match="not found"):
        Schema.from_yaml(tmp_path / "nope.yaml")
    with pytest.raises(SchemaError, match="not valid YAML"):
        Schema.from_yaml(_write(tmp_path, "features: [unclosed"))
    with pytest.raises(SchemaError, match="labels.target"):
        Schema.from_yaml(_write(tmp_path, ISSUE_EXAMPLE.replace("target: teacher_prob", "target: null")))
