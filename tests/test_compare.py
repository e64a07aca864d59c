"""`rdistill compare` end to end on small generated data: every row of the table, from real stages on a real Ray."""

from __future__ import annotations

import json

import pytest

from rdistill.compare import Row, compare_markdown, compare_table

from tiny_data import tiny_config, write_cyclic_log


def _run(seed: int, valid: float, test: float) -> dict:
    return {"seed": seed, "valid": {"ndcg_at_10": valid}, "test": {"ndcg_at_10": test, "hr_at_10": 2 * test}}


def test_the_table_pools_seeds_and_gives_the_verdict_whatever_it_is(tmp_path):
    config = tiny_config(tmp_path, "compare.students=[gru4rec]", "compare.seeds=2")
    rows = [Row("popularity", [_run(None, 0.01, 0.01)]), Row("teacher (x, items mode)", [_run(42, 0.2, 0.1)]),
            Row("gru4rec tuned plain", [_run(42, 0.2, 0.10), _run(43, 0.2, 0.12)]),
            Row("gru4rec initialised from the teacher", [_run(42, 0.2, 0.11), _run(43, 0.2, 0.11)]),
            Row("gru4rec distilled", [_run(42, 0.2, 0.10), _run(43, 0.2, 0.11)])]
    result = compare_table(config, rows, {"upstream stages": 1.0})
    distilled = result["rows"][-1]
    assert distilled["test_ndcg_at_10"] == pytest.approx({"mean": 0.105, "std": 0.005})
    assert distilled["gain_vs_tuned_plain"]["gru4rec"] == pytest.approx(0.105 / 0.11 - 1)
    assert result["rows"][0]["gain_vs_tuned_plain"]["gru4rec"] == pytest.approx(0.01 / 0.11 - 1)
    # 0.105 ± 0.005 against 0.11 ± 0.01: the seeds do not separate them
    assert result["verdicts"] == ["distilled gru4rec is level with (within one std of) the equally tuned plain "
                                  "gru4rec: test NDCG@10 0.1050 ± 0.0050 against 0.1100 ± 0.0100 (-4.5%, 2 seeds each)"]
    markdown = compare_markdown(result)
    assert "| gru4rec distilled | 2 | 0.2000 ± 0.0000 | 0.2100 ± 0.0100 | 0.1050 ± 0.0050 | -4.5% |" in markdown
    assert "| upstream stages | 1.0 |" in markdown


@pytest.mark.integration
def test_compare_end_to_end_writes_every_row(ray_cluster, tiny_backbone, tmp_path):
    from rdistill.cli import main

    write_cyclic_log(tmp_path / "raw", seed=4)
    overrides = [f"artifact_root={tmp_path / 'artifacts'}", "data.format=generic", f"data.root={tmp_path}",
                 "data.path=raw", "data.min_user_interactions=3", "data.min_item_interactions=1", "data.max_len=8",
                 f"teacher.model={tiny_backbone}", "teacher.epochs=1", "teacher.max_steps_per_epoch=8",
                 "teacher.batch_size=16", "teacher.num_workers=1", "teacher.cpus_per_worker=1", "infer.top_k=5",
                 "infer.progress=false", "distill.top_k=5", "compare.students=[gru4rec]", "compare.num_samples=2",
                 "compare.max_epochs=2", "compare.seeds=2", "tune.max_concurrent=2", "tune.scheduler=fifo"]
    assert main(["-q", "compare", *overrides]) == 0
    folder = tmp_path / "artifacts" / "compare" / "compare"
    result = json.loads((folder / "compare.json").read_text())
    models = [row["model"] for row in result["rows"]]
    assert models[0] == "popularity" and models[1].startswith("teacher")
    assert models[2:] == ["gru4rec tuned plain", "gru4rec initialised from the teacher", "gru4rec distilled"]
    for row in result["rows"][2:]:
        assert [run["seed"] for run in row["runs"]] == [42, 43]
        assert all(0 <= run["test"]["ndcg_at_10"] <= 1 for run in row["runs"])
    plain_params = result["rows"][2]["params"]
    assert {"train.lr", "student.params.dropout"} <= set(plain_params)  # the plain winner's own settings
    assert set(plain_params) < set(result["rows"][4]["params"])  # the distilled search started from them
    assert len(result["verdicts"]) == 1 and result["verdicts"][0].startswith("distilled gru4rec ")
    assert {"upstream stages", "gru4rec: plain search", "gru4rec: distillation search"} <= set(result["seconds"])
    assert "| gru4rec distilled | 2 |" in (folder / "compare.md").read_text()
    assert (folder / "manifest.json").is_file()
