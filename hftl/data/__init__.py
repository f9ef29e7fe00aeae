"""Data: reading sources by format, checking columns and labels, splitting, fingerprinting."""

from hftl.data.labels import LabelMap
from hftl.data.loading import check_source, fingerprint, load_split, read_columns
from hftl.data.splits import load_splits

__all__ = ["LabelMap", "check_source", "fingerprint", "load_split", "read_columns", "load_splits"]
