"""`rdistill teacher-train`: Ray Train + DeepSpeed fine-tune of the language-model teacher (rdistill/teacher/train.py)."""

from __future__ import annotations

from typing import Any

from rdistill import layout
from rdistill.layout import Address
from rdistill.stages.registry import Stage, StageContext


def _run(context: StageContext) -> dict[str, Any]:
    from rdistill.teacher.train import train_teacher

    result = train_teacher(context.config)
    return {"checkpoint_dir": str(result.checkpoint_dir), "best_epoch": result.best_epoch,
            "global_steps": result.global_steps, "seconds": round(result.seconds, 1),
            "valid_ndcg_at_10": result.valid["ndcg_at_10"], "test_ndcg_at_10": result.test["ndcg_at_10"],
            "valid": result.valid, "test": result.test}


STAGE = Stage(
    name="teacher-train",
    help="fine-tune the language-model teacher with Ray Train + DeepSpeed; writes teacher/checkpoint/",
    description=(
        "Fine-tune a pre-trained language model (teacher.model: 'minilm' or a local Hugging Face checkpoint) as a "
        "next-item recommender on <artifact_root>/dataset/ with Ray Train (teacher.num_workers workers, "
        "teacher.cpus_per_worker each, teacher.use_gpu) and DeepSpeed (teacher.zero_stage, "
        "teacher.gradient_accumulation_steps, teacher.grad_clip, warm-up + cosine). Validation NDCG@10 every epoch, "
        "a checkpoint per epoch (best teacher.keep_checkpoints kept), restart from the latest one after a failure "
        "(teacher.max_failures), early stopping (teacher.patience). Writes the consolidated fp32 teacher to "
        "teacher/checkpoint/ and its DeepSpeed shards to teacher/ds_checkpoint/. Connects to the Ray cluster in "
        "RAY_ADDRESS, or starts a local one."
    ),
    run=_run,
    reads=lambda context: [Address(layout.DATASET)],
    # the DeepSpeed shards first (their marker `latest` last), then the consolidated teacher, whose manifest says
    # the stage is done
    writes=lambda context: [Address(layout.TEACHER_DS_CHECKPOINT, marker=layout.TEACHER_DS_MARKER),
                            Address(layout.TEACHER_CHECKPOINT)],
    key_sections=("seed", "eval", "teacher"),
    upstream="prepare",
    output=lambda config: Address(layout.TEACHER_CHECKPOINT),
)
