"""Log data: the feature schema, the validated stream reader, synthetic logs.

- :class:`Schema` (:func:`load_schema`): the features and labels of a log.
- :class:`LogStream`: shards read in time order, validated against the schema.
- :func:`split_holdout` (:class:`HoldoutSplit`): the last shards kept out of
  training (the one split training and the ablation share).
- :func:`shard_fingerprint`, :func:`check_fingerprints`, :func:`count_rows`
  (:class:`ShardFingerprint`): what a run recorded about the shards it read.
"""

from matta_rec.errors import ConfigError, DataError, MattaError, SchemaError
from matta_rec.data.schema import FeatureSpec, LabelSpec, Schema, load_schema
from matta_rec.utils.lazy import lazy_attributes

# Imported on first use so that `import matta_rec.data` (e.g. for the schema on the CLI's
# start-up path) does not pay for pyarrow.
_LAZY = {
    "LogStream": "matta_rec.data.reader",
    "StreamPosition": "matta_rec.data.reader",
    "FollowOptions": "matta_rec.data.reader",
    "StreamReport": "matta_rec.data.reader",
    "QuarantinedShard": "matta_rec.data.reader",
    "write_shard": "matta_rec.data.writers",
    "read_shard": "matta_rec.data.formats",
    "validate_table": "matta_rec.data.validation",
    "ShardColumns": "matta_rec.data.validation",
    "split_holdout": "matta_rec.data.holdout",
    "HoldoutSplit": "matta_rec.data.holdout",
    "ShardFingerprint": "matta_rec.data.fingerprints",
    "check_fingerprints": "matta_rec.data.fingerprints",
    "count_rows": "matta_rec.data.fingerprints",
    "shard_fingerprint": "matta_rec.data.fingerprints",
}


__getattr__ = lazy_attributes(__name__, _LAZY, globals())

__all__ = [
    "ConfigError",
    "DataError",
    "MattaError",
    "SchemaError",
    "FeatureSpec",
    "LabelSpec",
    "Schema",
    "load_schema",
    *_LAZY,
]
