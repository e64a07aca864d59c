"""Dataset tables -> torch tensors for training and evaluation.

Histories are left-padded with 0 to a fixed length, so the most recent item is always the last column: every
student reads its user state from the same place, and serving pads an anonymous history the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from rdistill.artifacts import MANIFEST_NAME, read_json
from rdistill.data.schema import PADDING_IDX, read_table


def pad_histories(histories: pa.ListArray | pa.ChunkedArray, max_len: int) -> np.ndarray:
    """list<int32> histories -> int64 [rows, max_len], left-padded with 0, keeping the most recent max_len items."""
    if isinstance(histories, pa.ChunkedArray):
        histories = pa.concat_arrays(histories.chunks) if histories.num_chunks else pa.array([], pa.list_(pa.int32()))
    offsets = histories.offsets.to_numpy().astype(np.int64)
    offsets = offsets - offsets[0]
    values = histories.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    lengths = np.diff(offsets)
    rows = len(lengths)
    padded = np.full((rows, max_len), PADDING_IDX, dtype=np.int64)
    row_of_value = np.repeat(np.arange(rows), lengths)
    position_in_row = np.arange(len(values)) - offsets[:-1][row_of_value]
    column = max_len - lengths[row_of_value] + position_in_row
    keep = column >= 0  # histories longer than max_len keep their most recent items
    padded[row_of_value[keep], column[keep]] = values[keep]
    return padded


def pad_history_lists(histories: list[list[int]], max_len: int) -> torch.Tensor:
    """Python lists of item_idx (most recent last) -> LongTensor [B, max_len], as for the tables."""
    return torch.from_numpy(pad_histories(pa.array(histories, type=pa.list_(pa.int32())), max_len))


@dataclass
class SplitTensors:
    """One split in memory: row_id [R], user_idx [R], history [R, max_len] (left-padded), target [R].

    supervised [R], when set, is how many targets each row is trained on (sequence_windows: one per real history
    item, read at every position); None means one per row."""

    row_id: torch.Tensor
    user_idx: torch.Tensor
    history: torch.Tensor
    target: torch.Tensor
    supervised: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.target)

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                group_by_length: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (history, target) mini-batches (see batch_indices)."""
        for index in self.batch_indices(batch_size, shuffle, generator, group_by_length):
            yield self.history[index], self.target[index]

    def batch_indices(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                      group_by_length: bool = False) -> Iterator[torch.Tensor]:
        """Yield the row indices of each mini-batch; a seeded generator makes the order reproducible.

        group_by_length sorts rows by history length within chunks of 64 batches (a "sortish" sampler), so a
        batch's rows have similar lengths and students that drop all-padding columns do far less work; the
        batch order is still shuffled. Batches then hold equal numbers of supervised targets, not of rows (they
        differ when `supervised` is set): a loss is a mean over a batch's targets, and batches of 512 rows of
        length-sorted windows held from ~1,000 to ~20,000 targets on amazon-beauty, so a target in a batch of
        short histories weighed up to 20x one in a batch of long histories (short rows, 21% of the targets, took
        half the epoch's weight; benchmarks/results/sasrec_gap.md). Equal target counts weigh every target alike,
        as random batches do, at the sorted batches' cost."""
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        if group_by_length:
            lengths = (self.history != PADDING_IDX).sum(dim=1)
            chunk = batch_size * 64
            order = torch.cat([part[torch.argsort(lengths[part], stable=True)] for part in order.split(chunk)])
        if group_by_length and self.supervised is not None:
            starts = equal_target_starts(self.supervised[order], batch_size)
        else:
            starts = torch.arange(0, len(self), batch_size)
        ends = torch.cat([starts[1:], torch.tensor([len(self)])])
        batch_order = torch.arange(len(starts))
        if shuffle and group_by_length:
            batch_order = torch.randperm(len(starts), generator=generator)
        for batch in batch_order.tolist():
            yield order[int(starts[batch]):int(ends[batch])]

    def select(self, rows: torch.Tensor) -> SplitTensors:
        supervised = self.supervised[rows] if self.supervised is not None else None
        return SplitTensors(self.row_id[rows], self.user_idx[rows], self.history[rows], self.target[rows], supervised)


def equal_target_starts(supervised: torch.Tensor, batch_size: int) -> torch.Tensor:
    """First row of each batch when rows (in batch order) supervising `supervised` targets each are cut into as
    many batches as batch_size rows would make, each holding about the same number of targets."""
    n_batches = -(-len(supervised) // batch_size)
    before = torch.cumsum(supervised, 0) - supervised  # targets in the rows before each row
    budget = supervised.sum().double() / n_batches
    starts = torch.searchsorted(before.double(), budget * torch.arange(n_batches, dtype=torch.float64))
    return torch.unique_consecutive(starts)  # a row supervising more than a whole budget ends up alone


def sequence_windows(train: SplitTensors) -> SplitTensors:
    """The train rows that, read at every position, cover every training target exactly once.

    A user's prefix rows are consecutive; reading row r at every position revisits the targets of the
    max_len - 1 rows before it. So keep the user's last row and every max_len-th row before it: a causal
    student trained on these with all_positions_loss sees each target once per epoch, max_len times cheaper.
    """
    windows = train.select(sequence_window_rows(train.user_idx, train.history.shape[1]))
    windows.supervised = (windows.history != PADDING_IDX).sum(dim=1)
    return windows


def sequence_window_rows(user: torch.Tensor, max_len: int) -> torch.Tensor:
    """Positions of the rows sequence_windows keeps, given each train row's user_idx (rows grouped by user)."""
    is_last_of_user = torch.ones(len(user), dtype=torch.bool)
    is_last_of_user[:-1] = user[1:] != user[:-1]
    # rows_to_end[r] = how many rows of the same user come after r (rows are grouped by user, in order)
    positions = torch.arange(len(user))
    last_row = torch.where(is_last_of_user, positions, torch.full_like(positions, len(user)))
    last_row = torch.flip(torch.cummin(torch.flip(last_row, [0]), 0).values, [0])
    rows_to_end = last_row - positions
    return torch.nonzero(rows_to_end % max_len == 0).flatten()


@dataclass
class DatasetInfo:
    n_items: int  # catalogue size N; item_idx runs 1..N and 0 is padding
    n_users: int
    max_len: int  # the history length the dataset was prepared with


def load_dataset_info(dataset_dir: Path) -> DatasetInfo:
    dataset_dir = Path(dataset_dir)
    items = read_table(dataset_dir, "items")
    users = read_table(dataset_dir, "users")
    manifest_path = dataset_dir / MANIFEST_NAME
    max_len = read_json(manifest_path)["config"]["data"]["max_len"] if manifest_path.is_file() else None
    if max_len is None:
        histories = read_table(dataset_dir, "test").column("history")
        max_len = int(max((len(h) for h in histories.to_pylist()), default=1))
    return DatasetInfo(n_items=items.num_rows, n_users=users.num_rows, max_len=int(max_len))


def load_split(dataset_dir: Path, split: str, max_len: int) -> SplitTensors:
    table = read_table(Path(dataset_dir), split)
    return SplitTensors(
        row_id=torch.from_numpy(table.column("row_id").to_numpy().astype(np.int64)),
        user_idx=torch.from_numpy(table.column("user_idx").to_numpy().astype(np.int64)),
        history=torch.from_numpy(pad_histories(table.column("history"), max_len)),
        target=torch.from_numpy(table.column("target").to_numpy().astype(np.int64)),
    )
