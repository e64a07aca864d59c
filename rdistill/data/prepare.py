"""`rdistill prepare`: interaction log -> k-core filtered, chronologically ordered, leave-one-out splits.

Order within a user is by timestamp, then by the row's position in the source file, so equal timestamps (about
22% of MovieLens ratings share one with another rating of the same user) always give the same sequence. The last
item of each sequence is the test target, the one before it the validation target, and every prefix of the rest
is a training row; a target never appears among the items that came before it in its own split.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rdistill import layout
from rdistill.artifacts import MANIFEST_NAME, ArtifactLayout, atomic_dir, atomic_write_json, build_manifest
from rdistill.config import Config, config_to_dict
from rdistill.data.readers import ITEM_ROLES, RawLog, read_log
from rdistill.data.schema import ITEMS_SCHEMA, SPLIT_SCHEMA, USERS_SCHEMA
from rdistill.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Splits:
    """Leave-one-out splits as Arrow tables following SPLIT_SCHEMA."""

    train: pa.Table
    valid: pa.Table
    test: pa.Table


def order_chronologically(interactions: pd.DataFrame) -> pd.DataFrame:
    """Sort by user, then timestamp, then original row order (the deterministic tie-break)."""
    return interactions.sort_values(["user_id", "timestamp", "row_order"], kind="mergesort").reset_index(drop=True)


def drop_repeated_items(interactions: pd.DataFrame) -> pd.DataFrame:
    """Keep each (user, item) pair's first interaction; expects chronological order."""
    return interactions.drop_duplicates(["user_id", "item_id"], keep="first").reset_index(drop=True)


def take_slice(interactions: pd.DataFrame, max_users: int | None, max_per_user: int | None) -> pd.DataFrame:
    """A smaller, still realistic dataset for quick runs: the first max_users users (in natural id order) and
    each user's max_per_user most recent interactions; expects chronological order. None keeps everything."""
    if max_users is not None:
        keep = set(_natural_order(interactions["user_id"])[:max_users])
        interactions = interactions[interactions["user_id"].isin(keep)]
    if max_per_user is not None:
        from_end = interactions.groupby("user_id", sort=False).cumcount(ascending=False)
        interactions = interactions[from_end < max_per_user]
    return interactions.reset_index(drop=True)


def k_core(interactions: pd.DataFrame, min_user: int, min_item: int) -> tuple[pd.DataFrame, int]:
    """Drop users and items with too few interactions until none is left to drop; returns (log, iterations)."""
    iterations = 0
    while True:
        iterations += 1
        user_counts = interactions["user_id"].map(interactions["user_id"].value_counts())
        item_counts = interactions["item_id"].map(interactions["item_id"].value_counts())
        keep = (user_counts >= min_user) & (item_counts >= min_item)
        if keep.all():
            return interactions.reset_index(drop=True), iterations
        interactions = interactions[keep]


def _natural_order(ids: pd.Series) -> list[str]:
    """Numeric ids in numeric order, anything else in string order, so indices are stable across runs."""
    unique = ids.unique().tolist()
    if all(s.lstrip("-").isdigit() for s in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def _histories_table(row_ids, user_idx, sequences_with_ends, max_len: int) -> pa.Table:
    """Build a split table from (user sequence, end position) pairs: history = seq[end-max_len:end], target = seq[end]."""
    lengths = np.empty(len(sequences_with_ends), dtype=np.int64)
    values, targets = [], np.empty(len(sequences_with_ends), dtype=np.int32)
    for row, (sequence, end) in enumerate(sequences_with_ends):
        history = sequence[max(0, end - max_len):end]
        values.append(history)
        lengths[row] = len(history)
        targets[row] = sequence[end]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(values).astype(np.int32) if values else np.empty(0, dtype=np.int32)
    history = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.int32()))
    return pa.Table.from_arrays(
        [pa.array(row_ids, type=pa.int64()), pa.array(user_idx, type=pa.int32()), history,
         pa.array(targets, type=pa.int32())],
        schema=SPLIT_SCHEMA,
    )


def leave_one_out(sequences: list[np.ndarray], max_len: int) -> Splits:
    """sequences[u] is user u's item_idx sequence, oldest first, at least 3 items long."""
    train_pairs, train_users = [], []
    for user, sequence in enumerate(sequences):
        if len(sequence) < 3:
            raise DataError(f"user_idx {user} has {len(sequence)} interactions; leave-one-out needs at least 3")
        for end in range(1, len(sequence) - 2):
            train_pairs.append((sequence, end))
            train_users.append(user)
    users = np.arange(len(sequences))
    train = _histories_table(np.arange(len(train_pairs)), train_users, train_pairs, max_len)
    valid = _histories_table(users, users, [(s, len(s) - 2) for s in sequences], max_len)
    test = _histories_table(users, users, [(s, len(s) - 1) for s in sequences], max_len)
    return Splits(train, valid, test)


def build_tables(raw: RawLog, config: Config) -> tuple[dict[str, pa.Table], dict[str, int]]:
    """Filter, order, index and split a raw log into the dataset/ tables (pure: no I/O)."""
    data = config.data
    counts = {"raw_interactions": len(raw.interactions)}
    interactions = order_chronologically(raw.interactions)
    if data.drop_duplicates:
        interactions = drop_repeated_items(interactions)
    counts["deduplicated_interactions"] = len(interactions)
    interactions = take_slice(interactions, data.max_users, data.max_interactions_per_user)
    interactions, counts["k_core_iterations"] = k_core(
        interactions, data.min_user_interactions, data.min_item_interactions
    )
    if interactions.empty:
        raise DataError(
            f"no interactions left after the k-core filter (min_user_interactions={data.min_user_interactions}, "
            f"min_item_interactions={data.min_item_interactions}): lower them or check the input"
        )

    user_ids = _natural_order(interactions["user_id"])
    item_ids = _natural_order(interactions["item_id"])
    item_index = pd.Series(np.arange(1, len(item_ids) + 1, dtype=np.int32), index=item_ids)
    user_index = pd.Series(np.arange(len(user_ids), dtype=np.int32), index=user_ids)
    interactions = interactions.assign(
        user_idx=user_index.loc[interactions["user_id"]].to_numpy(),
        item_idx=item_index.loc[interactions["item_id"]].to_numpy(),
    )
    # Chronological order is kept by the stable sort above; regroup by user_idx, preserving it.
    interactions = interactions.sort_values(["user_idx"], kind="mergesort")
    boundaries = np.flatnonzero(np.diff(interactions["user_idx"].to_numpy())) + 1
    sequences = np.split(interactions["item_idx"].to_numpy(), boundaries)
    splits = leave_one_out(sequences, data.max_len)

    texts = {} if raw.items is None else dict(zip(raw.items["item_id"], raw.items["text"]))
    items = pa.Table.from_arrays(
        [pa.array(item_index.to_numpy(), type=pa.int32()), pa.array(item_ids, type=pa.string()),
         pa.array([texts.get(item_id, "") for item_id in item_ids], type=pa.string())],
        schema=ITEMS_SCHEMA,
    )
    users = pa.Table.from_arrays(
        [pa.array(user_index.to_numpy(), type=pa.int32()), pa.array(user_ids, type=pa.string())],
        schema=USERS_SCHEMA,
    )
    counts.update(
        users=len(user_ids),
        items=len(item_ids),
        interactions=len(interactions),
        items_without_text=sum(1 for item_id in item_ids if not texts.get(item_id)),
        train_rows=splits.train.num_rows,
        valid_rows=splits.valid.num_rows,
        test_rows=splits.test.num_rows,
    )
    _warn_when_most_items_lack_text(raw, counts["items_without_text"], len(item_ids))
    tables = {"items": items, "users": users, "train": splits.train, "valid": splits.valid, "test": splits.test}
    return tables, counts


def _warn_when_most_items_lack_text(raw: RawLog, without_text: int, n_items: int) -> None:
    """An item table that leaves most of the kept items without text (a partial or mismatched file) starves the
    text-reading teacher; a log without any item table is an ID-only dataset, and says so by having none."""
    if raw.items is None or 2 * without_text <= n_items:
        return
    items_file = next((str(raw.sources[role]) for role in ITEM_ROLES if role in raw.sources),
                      "the item table")
    log.warning("%s: %d of the %d items kept have no text (missing from the file or empty): the teacher reads "
                "item texts, so check that this is the dataset's full item table", items_file, without_text, n_items)


def prepare_dataset(config: Config, artifacts: ArtifactLayout | None = None) -> Path:
    """Read the configured source and write dataset/ atomically with its manifest; returns the folder.

    `artifacts` is the local side of the artifact root (default: the config's); the stage runner pushes the folder.
    """
    started = time.time()
    artifacts = artifacts or ArtifactLayout(config.artifact_path())  # a URI root is opened and probed before the work
    raw = read_log(config.data)
    tables, counts = build_tables(raw, config)
    with atomic_dir(artifacts.dataset_dir) as staging:
        for name, table in tables.items():
            pq.write_table(table, staging / layout.table_file(name))
        manifest = build_manifest(
            stage="prepare",
            config={"seed": config.seed, "data": config_to_dict(config.data)},
            inputs=raw.sources,
            counts=counts,
            started_at=started,
        )
        atomic_write_json(staging / MANIFEST_NAME, manifest)
    log.info("prepared %s: %s", artifacts.dataset_dir, counts)
    return artifacts.dataset_dir
