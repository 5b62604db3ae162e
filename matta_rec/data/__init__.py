"""Log data: the feature schema, the validated stream reader, synthetic logs."""

from matta_rec.data.errors import ConfigError, DataError, MattaError, SchemaError
from matta_rec.data.schema import FeatureSpec, LabelSpec, Schema, load_schema

# Imported on first use so that `import matta_rec.data.errors` (the CLI's
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
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'matta_rec.data' has no attribute '{name}'")


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
