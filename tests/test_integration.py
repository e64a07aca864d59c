"""End to end on real data: prepare MovieLens latest-small, train SASRec, beat the popularity baseline."""

from __future__ import annotations

import pytest

from rdistill.artifacts import ArtifactLayout
from rdistill.config import load_config
from rdistill.data.dataset import load_dataset_info, load_split
from rdistill.data.prepare import prepare_dataset
from rdistill.distill.train import train_student
from rdistill.evaluate import PopularityRecommender, evaluate_scorer

from tiny_data import REPO_ROOT, SHARED_DATA

pytestmark = pytest.mark.integration


@pytest.mark.skipif(not (SHARED_DATA / "ml-latest-small" / "ratings.csv").is_file(),
                    reason=f"MovieLens latest-small not found under {SHARED_DATA} (set RDISTILL_DATA_DIR)")
def test_sasrec_beats_popularity_on_movielens(tmp_path):
    config = load_config(
        REPO_ROOT / "jobs" / "configs" / "ml-latest-small.yaml",
        [f"artifact_root={tmp_path}", f"data.root={SHARED_DATA}", "train.epochs=8", "train.progress=false"],
    )
    dataset_dir = prepare_dataset(config)
    info = load_dataset_info(dataset_dir)
    assert (info.n_users, info.n_items) == (671, 3496)

    result = train_student(config)
    popularity = PopularityRecommender.fit(load_split(dataset_dir, "train", info.max_len), info.n_items)
    baseline = evaluate_scorer(popularity.scores, load_split(dataset_dir, "valid", info.max_len), config.eval.ks)
    assert result.valid["ndcg_at_10"] > 1.5 * baseline["ndcg_at_10"], (result.valid, baseline)
    assert (ArtifactLayout(tmp_path).student_dir("sasrec-seed42") / "model.safetensors").is_file()
