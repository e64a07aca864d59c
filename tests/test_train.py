"""The Ray-free training core: learns, early-stops on validation, touches test once, is reproducible."""

from __future__ import annotations

import json

import pytest
import torch

from rdistill.artifacts import ArtifactLayout
from rdistill.data.dataset import SplitTensors, load_dataset_info, load_split, pad_history_lists, sequence_windows
from rdistill.distill.train import TRAIN_STATE_FILE, TrainState, train_student
from rdistill.errors import ConfigError
from rdistill.evaluate import PopularityRecommender, evaluate_model, evaluate_scorer
from rdistill.models import load_student

from tiny_data import dataset_with_signals, tiny_config


def popularity_valid_ndcg(root) -> float:
    dataset = ArtifactLayout(root / "artifacts").dataset_dir
    info = load_dataset_info(dataset)
    popularity = PopularityRecommender.fit(load_split(dataset, "train", info.max_len), info.n_items)
    return evaluate_scorer(popularity.scores, load_split(dataset, "valid", info.max_len), [10])["ndcg_at_10"]


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "caser"])
def test_student_learns_the_pattern_and_beats_popularity(tiny_root, name):
    config = tiny_config(tiny_root, f"student.name={name}", "train.epochs=25", "train.lr=0.01",
                         f"train.run_name=learn-{name}")
    result = train_student(config)
    baseline = popularity_valid_ndcg(tiny_root)
    assert result.valid["ndcg_at_10"] > max(0.5, 3 * baseline), (result.valid, baseline)
    assert result.test is not None and result.test["ndcg_at_10"] > 0.5

    # the saved weights are the selected ones: reloading reproduces the reported validation metrics
    dataset = ArtifactLayout(tiny_root / "artifacts").dataset_dir
    model = load_student(result.run_dir)
    valid = load_split(dataset, "valid", model.max_len)
    assert evaluate_model(model, valid, config.eval.ks) == pytest.approx(result.valid)

    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["best_epoch"] == result.best_epoch
    assert metrics["test"] == pytest.approx(result.test)
    # per-epoch history carries validation metrics only: test is evaluated once, after selection
    assert all(not key.startswith("test") for epoch in metrics["history"] for key in epoch)
    assert (result.run_dir / "manifest.json").is_file()


def test_bce_loss_learns_the_pattern_too(tiny_root):
    """train.loss=bce (one sampled negative, DLLM2Rec's protocol) trains a student that beats popularity; its
    epochs log the BCE loss under its own name."""
    config = tiny_config(tiny_root, "student.name=sasrec", "train.loss=bce", "train.epochs=25", "train.lr=0.01",
                         "train.run_name=learn-bce")
    result = train_student(config)
    assert result.valid["ndcg_at_10"] > max(0.5, 3 * popularity_valid_ndcg(tiny_root)), result.valid
    history = json.loads((result.run_dir / "metrics.json").read_text())["history"]
    assert history[-1]["loss_bce"] < history[0]["loss_bce"]


def test_early_stopping_waits_patience_epochs_after_the_best(tiny_root):
    # lr tiny enough that the validation metric never improves after the first epoch
    config = tiny_config(tiny_root, "train.lr=1e-12", "train.epochs=50", "train.patience=3",
                         "train.run_name=stuck", "student.name=caser")
    result = train_student(config, evaluate_test=False)
    assert result.best_epoch == 1
    assert result.epochs_run == 4
    assert result.test is None


def test_epoch_callback_can_stop_training(tiny_root):
    seen = []

    def stop_at_two(report):
        seen.append((report.epoch, set(report.metrics)))
        assert report.improved == (report.metrics["ndcg_at_10"] >= max(
            [m for _, _, m in improved_so_far] + [float("-inf")]))
        improved_so_far.append((report.epoch, report.improved, report.metrics["ndcg_at_10"]))
        return report.epoch == 2

    improved_so_far = []

    config = tiny_config(tiny_root, "train.epochs=10", "train.run_name=callback", "student.name=gru4rec")
    result = train_student(config, on_epoch_end=stop_at_two)
    assert result.epochs_run == 2
    assert [epoch for epoch, _ in seen] == [1, 2]
    assert {"train_loss", "ndcg_at_10", "hr_at_10"} <= seen[0][1]


DISTILLED = ["distill.kd.weight=0.5", "distill.rank.weight=0.5", "distill.embed.weight=0.3", "distill.top_k=4"]


@pytest.mark.parametrize("distilled", [False, True], ids=["plain", "distilled"])
def test_a_run_resumed_from_its_saved_state_ends_exactly_like_the_run_that_never_stopped(tiny_root, tmp_path,
                                                                                      distilled):
    # dropout draws from torch's global generator, the batches and the ranking term's negatives from the run's own:
    # both must be restored; the embedding term's teacher table is rebuilt from the signals, not saved
    overrides = ["train.epochs=4", "train.patience=10", "student.params={hidden_size: 16, dropout: 0.3}"]
    if distilled:
        overrides += [f"artifact_root={dataset_with_signals(tiny_root, tmp_path / 'root')}", *DISTILLED]

    def save_every_epoch(report):
        report.state().save(tmp_path / f"{report.epoch}-{TRAIN_STATE_FILE}")

    straight = train_student(tiny_config(tiny_root, *overrides, "train.run_name=straight"),
                             on_epoch_end=save_every_epoch)
    saved = TrainState.load(tmp_path / f"1-{TRAIN_STATE_FILE}").model
    assert ("item_offset.projection.weight" in saved) == distilled and "item_offset.teacher_items" not in saved
    straight_weights = load_student(straight.run_dir).state_dict()
    straight_history = json.loads((straight.run_dir / "metrics.json").read_text())["history"]
    for stopped_after in (1, 2, 3):  # epoch 1 is the best so far (its state holds one copy of the weights)
        torch.manual_seed(12345)  # a process that resumes starts from other random states
        seen = []
        resumed = train_student(tiny_config(tiny_root, *overrides, f"train.run_name=resumed-{stopped_after}"),
                                on_epoch_end=lambda report: seen.append(report.epoch),
                                resume=TrainState.load(tmp_path / f"{stopped_after}-{TRAIN_STATE_FILE}"))
        assert seen == list(range(stopped_after + 1, 5))  # only the epochs after the saved one are trained
        assert (resumed.valid, resumed.best_epoch, resumed.epochs_run) == (
            straight.valid, straight.best_epoch, straight.epochs_run)
        assert resumed.test == straight.test
        weights = load_student(resumed.run_dir).state_dict()
        assert all(torch.equal(straight_weights[key], weights[key]) for key in weights)
        history = json.loads((resumed.run_dir / "metrics.json").read_text())["history"]
        assert [{k: v for k, v in row.items() if k != "seconds"} for row in history] == [
            {k: v for k, v in row.items() if k != "seconds"} for row in straight_history]


def test_same_seed_same_result_and_a_new_seed_differs(tiny_root):
    runs = [
        train_student(tiny_config(tiny_root, "train.epochs=3", f"seed={seed}", f"train.run_name=seed-{i}"))
        for i, seed in enumerate([7, 7, 8])
    ]
    assert runs[0].valid == runs[1].valid
    a = load_student(runs[0].run_dir).state_dict()
    b = load_student(runs[1].run_dir).state_dict()
    c = load_student(runs[2].run_dir).state_dict()
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(a[key], c[key]) for key in a)


def test_all_positions_objective_needs_a_causal_student(tiny_root):
    config = tiny_config(tiny_root, "student.name=caser", "train.objective=all_positions")
    with pytest.raises(ConfigError, match="caser is not causal"):
        train_student(config)


def test_sequence_windows_cover_every_training_target_once(tiny_root):
    dataset = ArtifactLayout(tiny_root / "artifacts").dataset_dir
    info = load_dataset_info(dataset)
    for max_len in (info.max_len, 3):
        train = load_split(dataset, "train", max_len)
        windows = sequence_windows(train)
        # a window row read at every real position predicts one target per real history item
        real_items = (windows.history != 0).sum().item()
        assert real_items == len(train)
        # and each user's last train row is among them
        last_rows = {user: row for row, user in zip(train.row_id.tolist(), train.user_idx.tolist())}
        assert set(last_rows.values()) <= set(windows.row_id.tolist())


def test_sequence_windows_count_the_targets_each_row_supervises(tiny_root):
    dataset = ArtifactLayout(tiny_root / "artifacts").dataset_dir
    windows = sequence_windows(load_split(dataset, "train", load_dataset_info(dataset).max_len))
    assert torch.equal(windows.supervised, (windows.history != 0).sum(dim=1))
    rows = torch.tensor([2, 0])
    assert torch.equal(windows.select(rows).supervised, windows.supervised[rows])


def windows_of_lengths(lengths: list[int]) -> SplitTensors:
    """Window rows with these history lengths, as sequence_windows makes them (one user each)."""
    count = len(lengths)
    history = pad_history_lists([list(range(1, length + 1)) for length in lengths], max(lengths))
    split = SplitTensors(torch.arange(count), torch.arange(count), history, torch.ones(count, dtype=torch.long))
    return sequence_windows(split)


def test_length_grouped_batches_weigh_every_target_alike():
    """all_positions_loss is a mean over a batch's targets; batches of equal row counts sorted by length held
    20x more targets in the longest than in the shortest on amazon-beauty, so a short history's targets
    outweighed a long one's (the gap to the public SASRec, benchmarks/results/sasrec_gap.md). Length-grouped
    batches must hold about equal numbers of targets instead, and still cover every row once."""
    lengths = [2] * 600 + [5] * 300 + [40] * 60  # Amazon-like: mostly short, a long tail
    windows = windows_of_lengths(lengths)
    generator = torch.Generator().manual_seed(0)
    batches = list(windows.batch_indices(64, shuffle=True, generator=generator, group_by_length=True))
    assert len(batches) == -(-len(windows) // 64)
    assert torch.equal(torch.cat(batches).sort().values, torch.arange(len(windows)))
    targets = torch.tensor([int((windows.history[batch] != 0).sum()) for batch in batches])
    assert targets.max() <= 1.1 * targets.float().mean() + 40  # within one row of an equal share
    assert targets.min() >= 0.9 * targets.float().mean() - 40
    widths = [int((windows.history[batch] != 0).any(dim=0).sum()) for batch in batches]
    # still grouped: the short rows' 2,700 of 5,100 targets fill about 8 of the 15 batches, and those stay narrow
    assert sum(width <= 5 for width in widths) >= 7


def test_rows_without_target_counts_still_batch_by_rows():
    # valid/test rows and per-row training: one target per row, so equal row counts are equal target counts
    split = windows_of_lengths([2] * 100 + [30] * 28)
    split.supervised = None
    batches = list(split.batch_indices(32, shuffle=True, generator=torch.Generator().manual_seed(0),
                                       group_by_length=True))
    assert sorted(len(batch) for batch in batches) == [32, 32, 32, 32]
