"""Log data: the feature schema, the validated stream reader, synthetic logs."""

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
}


__getattr__ = lazy_attributes(__name__, _LAZY, globals())
