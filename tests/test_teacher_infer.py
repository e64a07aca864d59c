"""Teacher signals with a real local Ray Data actor pool, checked against a single-process reference."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from rdistill.artifacts import file_sha256
from rdistill.data.dataset import load_dataset_info, load_split
from rdistill.data.schema import read_table
from rdistill.errors import ArtifactError, ConfigError
from rdistill.evaluate import mask_history
from rdistill.models.lm_teacher import build_teacher, save_teacher
from rdistill.teacher.infer import infer_teacher
from rdistill.teacher.signals import TOPK_SCHEMA, hidden_schema, load_signals

from tiny_data import tiny_config

TOP_K = 5


def make_teacher(tiny_root, tmp_path, backbone: str, *overrides: str):
    """A tiny random teacher saved as teacher/checkpoint/ next to a copy of the tiny dataset."""
    shutil.copytree(tiny_root / "artifacts" / "dataset", tmp_path / "dataset")
    config = tiny_config(tiny_root, f"artifact_root={tmp_path}", f"teacher.model={backbone}", "infer.progress=false",
                         f"infer.top_k={TOP_K}", "infer.batch_size=64", *overrides)
    info = load_dataset_info(tmp_path / "dataset")
    torch.manual_seed(0)
    teacher, tokenizer = build_teacher(config.teacher.architecture(), read_table(tmp_path / "dataset", "items"),
                                       info.max_len)
    with torch.no_grad():  # a teacher that has "learnt" something: distinct, untied item scores
        teacher.item_id_embedding.weight.normal_(0, 1.0)
        teacher.item_id_embedding.weight[0] = 0
    save_teacher(teacher, tokenizer, tmp_path / "teacher" / "checkpoint")
    return config, teacher.eval(), info


@torch.no_grad()
def reference(teacher, split, layers):
    """The plain single-process computation: full-catalogue scores, history masked, top-K."""
    user, hidden = teacher.encode(split.history, layers)
    scores = mask_history(teacher.scores(split.history), split.history)
    top_scores, top_items = torch.topk(scores, TOP_K, dim=1)
    return user.numpy(), top_items.numpy(), top_scores.numpy(), {k: v.numpy() for k, v in hidden.items()}, scores


@pytest.mark.integration
def test_ray_data_signals_equal_the_single_process_reference(ray_cluster, tiny_root, tiny_backbone, tmp_path):
    config, teacher, info = make_teacher(tiny_root, tmp_path, tiny_backbone, "infer.splits=[train, valid]",
                                         "infer.hidden_layers=[2, 0]")
    result = infer_teacher(config)
    assert not result.skipped

    for split_name in ("train", "valid"):
        split = load_split(tmp_path / "dataset", split_name, info.max_len)
        signals = load_signals(result.signals_dir, split_name)
        # one output row per input row, joinable by row_id (and in the split's order)
        assert result.rows[split_name] == len(split)
        np.testing.assert_array_equal(signals.row_id, split.row_id.numpy())
        user, top_items, top_scores, hidden, scores = reference(teacher, split, [0, 2])
        np.testing.assert_allclose(signals.topk_scores, top_scores, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(signals.user_emb, user, rtol=1e-5, atol=1e-5)
        # the same items: exactly, except where two candidates tie within float noise
        gaps = np.abs(np.diff(scores.topk(TOP_K + 1).values.numpy(), axis=1)).min(axis=1)
        clear = gaps > 1e-4
        assert clear.mean() > 0.9
        np.testing.assert_array_equal(signals.topk_items[clear], top_items[clear])
        # and each stored score is that item's reference score
        np.testing.assert_allclose(np.take_along_axis(scores.numpy(), signals.topk_items, 1), signals.topk_scores,
                                   rtol=1e-5, atol=1e-5)
        # history items are never recommended
        history = split.history.numpy()
        assert not any(set(row_items) & set(row_history) for row_items, row_history in zip(signals.topk_items,
                                                                                          history))
        assert sorted(signals.hidden) == [0, 2]
        for layer in (0, 2):
            np.testing.assert_allclose(signals.hidden[layer], hidden[layer], rtol=1e-5, atol=1e-5)

    # the item table, and logits as dot products of the stored vectors
    with torch.no_grad():
        np.testing.assert_allclose(signals.item_emb[1:], teacher.item_embeddings()[1:].numpy(), rtol=1e-6, atol=1e-6)
    assert np.all(signals.item_emb[0] == 0)
    dots = np.einsum("rd,rkd->rk", signals.user_emb, signals.item_emb[signals.topk_items])
    np.testing.assert_allclose(dots, signals.topk_scores, rtol=1e-4, atol=1e-4)

    # explicit schemas and a manifest that says what the output came from
    assert pq.read_schema(result.signals_dir / "topk.parquet").equals(TOPK_SCHEMA, check_metadata=False)
    assert pq.read_schema(result.signals_dir / "hidden_valid.parquet").equals(hidden_schema([0, 2]),
                                                                              check_metadata=False)
    manifest = json.loads((result.signals_dir / "manifest.json").read_text())
    assert manifest["stage"] == "teacher-infer"
    assert manifest["counts"]["rows"] == {"train": 816, "valid": 120}
    assert manifest["counts"]["items"] == info.n_items == 40
    assert manifest["counts"]["embedding_dim"] == 32
    assert manifest["inputs"]["teacher"]["sha256"] == file_sha256(tmp_path / "teacher" / "checkpoint"
                                                                  / "model.safetensors")
    assert manifest["config"]["infer"]["top_k"] == TOP_K
    assert sorted(manifest["files"]) == ["hidden.parquet", "hidden_valid.parquet", "item_emb.parquet",
                                         "topk.parquet", "topk_valid.parquet"]
    assert not list(tmp_path.glob(".signals.tmp-*"))  # the staging folder was renamed into place


@pytest.mark.integration
def test_a_rerun_skips_and_a_change_recomputes(ray_cluster, tiny_root, tiny_backbone, tmp_path):
    config, teacher, info = make_teacher(tiny_root, tmp_path, tiny_backbone, "infer.num_actors=1")
    first = infer_teacher(config)
    written = (tmp_path / "signals" / "topk.parquet").stat().st_mtime_ns

    again = infer_teacher(config)
    assert again.skipped and again.rows == first.rows == {"train": 816}
    assert (tmp_path / "signals" / "topk.parquet").stat().st_mtime_ns == written

    # pool and batch size change only the speed: still skipped
    config.infer.batch_size = 32
    config.infer.num_actors = 2
    assert infer_teacher(config).skipped

    config.infer.top_k = 3
    changed = infer_teacher(config)
    assert not changed.skipped
    assert load_signals(tmp_path / "signals").topk_items.shape == (816, 3)

    forced = infer_teacher(config, force=True)
    assert not forced.skipped

    # a retrained teacher (different weights) recomputes too
    with torch.no_grad():
        teacher.output_projection.bias.add_(0.5)
    save_teacher(teacher, build_teacher(config.teacher.architecture(), read_table(tmp_path / "dataset", "items"),
                                        info.max_len)[1], tmp_path / "teacher" / "checkpoint")
    assert not infer_teacher(config).skipped


class TestMismatchesFailBeforeAnyActor:
    """No Ray is needed: every check runs on the driver before Ray Data starts."""

    def test_missing_checkpoint(self, tiny_root, tmp_path):
        shutil.copytree(tiny_root / "artifacts" / "dataset", tmp_path / "dataset")
        config = tiny_config(tiny_root, f"artifact_root={tmp_path}")
        with pytest.raises(ArtifactError, match=r"teacher/checkpoint does not exist: train a teacher first"):
            infer_teacher(config)

    def test_a_folder_that_is_not_a_teacher(self, tiny_root, tmp_path):
        shutil.copytree(tiny_root / "artifacts" / "dataset", tmp_path / "dataset")
        (tmp_path / "teacher" / "checkpoint").mkdir(parents=True)
        config = tiny_config(tiny_root, f"artifact_root={tmp_path}")
        with pytest.raises(ArtifactError, match="model.safetensors is missing"):
            infer_teacher(config)

    def test_catalogue_size_differs(self, tiny_root, tiny_backbone, tmp_path):
        config, _, _ = make_teacher(tiny_root, tmp_path, tiny_backbone)
        items = pq.read_table(tmp_path / "dataset" / "items.parquet")
        pq.write_table(items.slice(0, 30), tmp_path / "dataset" / "items.parquet")
        with pytest.raises(ArtifactError, match=r"scores 40 items but .*dataset has 30"):
            infer_teacher(config)

    def test_same_size_but_another_item_table(self, tiny_root, tiny_backbone, tmp_path):
        config, _, _ = make_teacher(tiny_root, tmp_path, tiny_backbone)
        (tmp_path / "teacher" / "checkpoint" / "manifest.json").write_text(
            json.dumps({"inputs": {"items": {"sha256": "0" * 64}}}))
        with pytest.raises(ArtifactError, match="trained on a different item table"):
            infer_teacher(config)

    def test_hidden_layer_out_of_range(self, tiny_root, tiny_backbone, tmp_path):
        config, _, _ = make_teacher(tiny_root, tmp_path, tiny_backbone, "infer.hidden_layers=[1, 3]")
        with pytest.raises(ConfigError, match=r"has 2 layers .* so \[3\] do not exist"):
            infer_teacher(config)

    def test_top_k_larger_than_the_catalogue_allows(self, tiny_root, tiny_backbone, tmp_path):
        config, _, _ = make_teacher(tiny_root, tmp_path, tiny_backbone, "infer.top_k=33")
        with pytest.raises(ConfigError, match=r"infer.top_k=33 exceeds the 32 items"):
            infer_teacher(config)

    def test_missing_split_table(self, tiny_root, tiny_backbone, tmp_path):
        config, _, _ = make_teacher(tiny_root, tmp_path, tiny_backbone, "infer.splits=[train, test]")
        (tmp_path / "dataset" / "test.parquet").unlink()
        with pytest.raises(ArtifactError, match="test.parquet is missing"):
            infer_teacher(config)


def test_signals_reader_aligns_rows_and_names_gaps(tmp_path):
    from rdistill.teacher.signals import TeacherSignals

    signals = TeacherSignals(row_id=np.array([2, 0, 1]), topk_items=np.array([[3], [1], [2]]),
                             topk_scores=np.array([[0.3], [0.1], [0.2]], dtype=np.float32),
                             user_emb=np.zeros((3, 2), dtype=np.float32), item_emb=np.zeros((4, 2), np.float32),
                             hidden={1: np.array([[2.0], [0.0], [1.0]], dtype=np.float32)})
    aligned = signals.aligned_to(np.array([0, 1, 2]), "train")
    np.testing.assert_array_equal(aligned.topk_items[:, 0], [1, 2, 3])
    np.testing.assert_array_equal(aligned.hidden[1][:, 0], [0.0, 1.0, 2.0])
    with pytest.raises(ArtifactError, match="no teacher signal for 1 rows .first row_id 5"):
        signals.aligned_to(np.array([0, 5]), "train")
