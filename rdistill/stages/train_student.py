"""`rdistill train-student`: one student run, plain or distilled, with early stopping (rdistill/distill/train.py)."""

from __future__ import annotations

from typing import Any

from rdistill import layout
from rdistill.config import Config
from rdistill.layout import Address
from rdistill.stages.registry import Stage, StageContext


def student_inputs(config: Config) -> list[Address]:
    """What one student run reads: the dataset, the teacher's signals when distilling, and the teacher itself for a
    student cut from it (slm). Tune trials pull the same on their own nodes."""
    from rdistill.distill.terms import TEACHER_CHECKPOINT, active_terms
    from rdistill.models import student_class

    addresses = [Address(layout.DATASET)]
    if config.distill.uses_teacher():
        addresses.append(Address(layout.SIGNALS))
    student = student_class(config.student.name)
    term_needs = {need for term in active_terms(config.distill).values() for need in term.needs}
    if (hasattr(student, "params_from_teacher") or hasattr(student, "load_teacher_weights")
            or TEACHER_CHECKPOINT in term_needs):
        addresses.append(Address(layout.TEACHER_CHECKPOINT))
    return addresses


def _run(context: StageContext) -> dict[str, Any]:
    from rdistill.distill.train import train_student

    result = train_student(context.config)
    return {"run_dir": str(result.run_dir), "student": context.config.student.name,
            "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
            "seconds_per_epoch": round(result.seconds_per_epoch, 3), "num_parameters": result.num_parameters,
            "valid": result.valid, "test": result.test}


def _writes(context: StageContext) -> list[Address]:
    from rdistill.distill.train import default_run_name

    return [Address(layout.student_run(default_run_name(context.config)))]


STAGE = Stage(
    name="train-student",
    help="train one student (student.name) with early stopping; writes students/<run>/",
    description=(
        "Train the student named by student.name (sasrec, gru4rec, caser, slm) on <artifact_root>/dataset/ with "
        "Adam and full-softmax cross-entropy, plus the distillation terms whose weight is above zero (distill.*, "
        "reading signals/), early-stop on the validation metric eval.select_metric (patience train.patience), keep "
        "the best weights, evaluate the test split once with them, and write model.safetensors, model_config.json, "
        "metrics.json and manifest.json to <artifact_root>/students/<train.run_name or student-seedN>/."
    ),
    run=_run,
    reads=lambda context: student_inputs(context.config),
    writes=_writes,
)
