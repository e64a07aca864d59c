"""The dataset/ data contract: Parquet schemas every stage reads and writes, in one place.

- items.parquet: item_idx int32 (1..N; 0 is padding and never stored), item_id string, text string
- users.parquet: user_idx int32 (0..U-1), user_id string
- train/valid/test.parquet: row_id int64, user_idx int32, history list<int32> (most recent last, at most
  max_len items), target int32. valid and test hold one row per user (leave-one-out); train holds every prefix
  of the training part of each sequence. row_id numbers the rows of a split from 0 and is how teacher signals
  join back to train rows.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rdistill import layout
from rdistill.errors import ArtifactError

ITEMS_SCHEMA = pa.schema(
    [
        pa.field("item_idx", pa.int32(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
    ]
)
USERS_SCHEMA = pa.schema(
    [
        pa.field("user_idx", pa.int32(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
    ]
)
SPLIT_SCHEMA = pa.schema(
    [
        pa.field("row_id", pa.int64(), nullable=False),
        pa.field("user_idx", pa.int32(), nullable=False),
        pa.field("history", pa.list_(pa.int32()), nullable=False),
        pa.field("target", pa.int32(), nullable=False),
    ]
)
SPLITS = ("train", "valid", "test")
TABLE_SCHEMAS = {"items": ITEMS_SCHEMA, "users": USERS_SCHEMA, **{split: SPLIT_SCHEMA for split in SPLITS}}
PADDING_IDX = 0


def read_table(dataset_dir: Path, name: str) -> pa.Table:
    """Read one dataset table and check it against the contract."""
    path = Path(dataset_dir) / layout.table_file(name)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: run `rdistill prepare` first (or check artifact_root)")
    table = pq.read_table(path)
    expected = TABLE_SCHEMAS[name]
    missing = [field.name for field in expected if field.name not in table.column_names]
    if missing:
        raise ArtifactError(f"{path}: columns {missing} missing (has {table.column_names})")
    table = table.select(expected.names)
    if not table.schema.equals(expected, check_metadata=False):
        try:
            table = table.cast(expected)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise ArtifactError(f"{path}: schema {table.schema} does not match the contract {expected}: {err}")
    return table
