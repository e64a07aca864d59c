"""The signals/ data contract: what `rdistill teacher-infer` writes and distillation reads, in one place.

- ``topk.parquet`` (train rows; ``topk_valid.parquet`` / ``topk_test.parquet`` when those splits are asked for):
  row_id int64 (joins to the split's row_id), topk_items list<int32> (best first, K per row), topk_scores
  list<float32> (the teacher's logits of those items), user_emb list<float32> [d] (the user vector the logits are
  dot products with).
- ``item_emb.parquet``: item_idx int32 (1..N), embedding list<float32> [d] — the item table the teacher scores
  against, so ``topk_scores[r, j] == user_emb[r] · embedding[topk_items[r, j]]``.
- ``hidden.parquet`` (``hidden_valid.parquet``, …; only when infer.hidden_layers is set): row_id int64 and one
  column ``layer_<i>`` list<float32> [width] per chosen backbone layer, pooled like the teacher's user state.
- ``manifest.json``: config, input hashes (checkpoint weights, dataset tables), counts and the fingerprint a rerun
  compares to decide whether to skip.

The file names are addresses of rdistill/layout.py (`signals_topk_file`, `SIGNALS_ITEM_EMB_FILE`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rdistill import layout
from rdistill.errors import ArtifactError

def hidden_column(layer: int) -> str:
    return f"layer_{layer}"


TOPK_SCHEMA = pa.schema([
    pa.field("row_id", pa.int64(), nullable=False),
    pa.field("topk_items", pa.list_(pa.int32()), nullable=False),
    pa.field("topk_scores", pa.list_(pa.float32()), nullable=False),
    pa.field("user_emb", pa.list_(pa.float32()), nullable=False),
])
ITEM_EMB_SCHEMA = pa.schema([
    pa.field("item_idx", pa.int32(), nullable=False),
    pa.field("embedding", pa.list_(pa.float32()), nullable=False),
])


def hidden_schema(layers: list[int]) -> pa.Schema:
    return pa.schema([pa.field("row_id", pa.int64(), nullable=False)]
                     + [pa.field(hidden_column(layer), pa.list_(pa.float32()), nullable=False) for layer in layers])


def list_column(matrix: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    """A [rows, width] array -> list<value_type> with one entry per row (no Python loop)."""
    matrix = np.ascontiguousarray(matrix)
    rows, width = matrix.shape
    offsets = pa.array(np.arange(0, (rows + 1) * width, width, dtype=np.int32) if rows else np.zeros(1, np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1), type=value_type))


def list_matrix(column: pa.ChunkedArray | pa.ListArray, dtype, path: Path, name: str) -> np.ndarray:
    """list<…> with equal-length rows -> [rows, width] numpy array; ragged rows are an ArtifactError."""
    if isinstance(column, pa.ChunkedArray):
        column = pa.concat_arrays(column.chunks) if column.num_chunks else pa.array([], column.type)
    lengths = np.diff(column.offsets.to_numpy())
    if len(lengths) and (lengths != lengths[0]).any():
        bad = int(np.nonzero(lengths != lengths[0])[0][0])
        raise ArtifactError(f"{path}: column {name} has rows of different lengths (row {bad}: {lengths[bad]}, "
                            f"row 0: {lengths[0]})")
    width = int(lengths[0]) if len(lengths) else 0
    return column.flatten().to_numpy(zero_copy_only=False).astype(dtype).reshape(len(lengths), width)


@dataclass
class TeacherSignals:
    """The signals of one split, as arrays aligned by row_id (row r of every array is split row row_id[r])."""

    row_id: np.ndarray  # [R] int64
    topk_items: np.ndarray  # [R, K] int64, best first
    topk_scores: np.ndarray  # [R, K] float32
    user_emb: np.ndarray  # [R, d] float32
    item_emb: np.ndarray  # [N + 1, d] float32; row 0 (padding) is zeros
    hidden: dict[int, np.ndarray]  # layer -> [R, width] float32; empty when not computed

    def aligned_to(self, row_ids: np.ndarray, where: str) -> TeacherSignals:
        """Reorder to the given split row ids; every row must have a signal."""
        position = np.full(int(max(row_ids.max(initial=-1), self.row_id.max(initial=-1))) + 1, -1, dtype=np.int64)
        position[self.row_id] = np.arange(len(self.row_id))
        found = position[row_ids]
        if (found < 0).any():
            missing = row_ids[found < 0]
            raise ArtifactError(f"{where}: no teacher signal for {len(missing)} rows (first row_id {missing[0]}); "
                                "rerun `rdistill teacher-infer` on this dataset")
        return TeacherSignals(self.row_id[found], self.topk_items[found], self.topk_scores[found],
                              self.user_emb[found], self.item_emb, {k: v[found] for k, v in self.hidden.items()})


def _read(path: Path, schema: pa.Schema) -> pa.Table:
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: run `rdistill teacher-infer` first")
    table = pq.read_table(path)
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise ArtifactError(f"{path}: columns {missing} missing (has {table.column_names})")
    return table


def load_signals(signals_dir: Path, split: str = "train", hidden: bool = True) -> TeacherSignals:
    signals_dir = Path(signals_dir)
    path = signals_dir / layout.signals_topk_file(split)
    topk = _read(path, TOPK_SCHEMA)
    items_path = signals_dir / layout.SIGNALS_ITEM_EMB_FILE
    items = _read(items_path, ITEM_EMB_SCHEMA)
    item_idx = items.column("item_idx").to_numpy().astype(np.int64)
    vectors = list_matrix(items.column("embedding"), np.float32, items_path, "embedding")
    item_emb = np.zeros((int(item_idx.max(initial=0)) + 1, vectors.shape[1]), dtype=np.float32)
    item_emb[item_idx] = vectors
    layers: dict[int, np.ndarray] = {}
    hidden_path = signals_dir / layout.signals_hidden_file(split)
    row_id = topk.column("row_id").to_numpy().astype(np.int64)
    if hidden and hidden_path.is_file():
        table = pq.read_table(hidden_path)
        hidden_rows = table.column("row_id").to_numpy().astype(np.int64)
        if len(hidden_rows) != len(row_id) or not np.array_equal(np.sort(hidden_rows), np.sort(row_id)):
            raise ArtifactError(f"{hidden_path}: row ids differ from those of {path}")
        position = np.empty(int(hidden_rows.max(initial=0)) + 1, dtype=np.int64)
        position[hidden_rows] = np.arange(len(hidden_rows))
        for name in table.column_names[1:]:
            layers[int(name.removeprefix("layer_"))] = list_matrix(table.column(name), np.float32, hidden_path,
                                                                   name)[position[row_id]]
    return TeacherSignals(
        row_id=row_id,
        topk_items=list_matrix(topk.column("topk_items"), np.int64, path, "topk_items"),
        topk_scores=list_matrix(topk.column("topk_scores"), np.float32, path, "topk_scores"),
        user_emb=list_matrix(topk.column("user_emb"), np.float32, path, "user_emb"),
        item_emb=item_emb,
        hidden=layers,
    )
