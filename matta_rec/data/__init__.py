"""Log data: the feature schema, the validated stream reader, synthetic logs."""

from matta_rec.data.errors import ConfigError, DataError, MattaError, SchemaError
from matta_rec.data.schema import FeatureSpec, LabelSpec, Schema, load_schema
