"""The address book: every artifact path under the artifact root, defined once.

Each artifact has one relative name (a POSIX string, what `ArtifactRoot.pull`/`push`/`read_bytes` take and what
a URI root joins to) and one local path (`ArtifactLayout`, under the root's local mirror or a plain local root).
Nothing else in rdistill types an artifact path: stages declare what they read and write with these names and
the stage runner (rdistill/stages/registry.py) pulls and pushes them.

    <artifact_root>/
      pipeline.json                      the pipeline's stage records          (PIPELINE_STATE)
      dataset/                           prepare                               (DATASET)
      teacher/checkpoint/                teacher-train: consolidated teacher   (TEACHER_CHECKPOINT)
      teacher/ds_checkpoint/ ray/ cache/ teacher-train: DeepSpeed shards, Ray Train runs, item-text vectors
      signals/                           teacher-infer                         (SIGNALS)
      students/<run>/                    train-student                         (student_run)
      tune/<name>/                       tune                                  (tune_campaign)
      serving/model/                     export (and tune's winner)            (SERVING_MODEL)
      report/                            report                                (REPORT)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# file names shared by every folder
MANIFEST = "manifest.json"  # a folder's provenance record, and the marker that it is complete
METRICS = "metrics.json"  # a trained model's valid/test metrics and history
MODEL_CONFIG = "model_config.json"
WEIGHTS = "model.safetensors"

# one folder (or file) per stage output
PIPELINE_STATE = "pipeline.json"
DATASET = "dataset"
TEACHER = "teacher"
TEACHER_CHECKPOINT = "teacher/checkpoint"
TEACHER_DS_CHECKPOINT = "teacher/ds_checkpoint"
TEACHER_DS_MARKER = "latest"  # DeepSpeed writes it last in a checkpoint folder
TEACHER_RAY = "teacher/ray"
TEACHER_CACHE = "teacher/cache"
TEACHER_FAULT_MARKER = "teacher/.fault_injected"  # teacher.fail_once_at_step: the one injected failure happened
# a consolidated teacher's files (in teacher/checkpoint/, beside WEIGHTS, METRICS and MANIFEST)
TEACHER_CONFIG_FILE = "teacher_config.json"
TEACHER_BACKBONE_DIR = "backbone"  # the backbone's config and tokenizer (its weights are inside WEIGHTS)
TEACHER_ITEM_TOKENS_FILE = "item_tokens.json"  # text mode: the token ids of every item's text
SIGNALS = "signals"
SIGNALS_ITEM_EMB_FILE = "item_emb.parquet"  # in signals/: the item table the teacher scores against
STUDENTS = "students"
TUNE = "tune"
TUNE_CAMPAIGN_FILE = "campaign.json"
TUNE_SUMMARY_FILE = "summary.json"
SERVING_MODEL = "serving/model"
SERVING_ITEMS_FILE = "items.parquet"  # in serving/model/: the item table the export scores and answers with
REPORT = "report"
COMPARE = "compare"
COMPARE_TABLE_FILE = "compare.json"  # in compare/<name>/, beside compare.md and manifest.json
COMPARE_MARKDOWN_FILE = "compare.md"
REPORT_SUMMARY_FILE = "report.json"  # the report folder's marker
REPORT_MARKDOWN_FILE = "report.md"
REPORT_HTML_FILE = "report.html"
LATENCY_FILE = "latency.json"

DATASET_TABLES = ("items", "users", "train", "valid", "test")


def join(*parts: str) -> str:
    """Relative names join with '/' whatever the OS: they are keys of object stores too."""
    return "/".join(part.strip("/") for part in parts if part)


def table(name: str) -> str:
    """dataset/{items,users,train,valid,test}.parquet"""
    return join(DATASET, f"{name}.parquet")


def table_file(name: str) -> str:
    """{items,users,train,valid,test}.parquet: a dataset table's file name inside dataset/"""
    return f"{name}.parquet"


def student_run(run_name: str) -> str:
    """students/<run>/: one trained student (weights, model config, metrics, manifest)"""
    return join(STUDENTS, run_name)


def tune_campaign(name: str) -> str:
    """tune/<tune.name>/: one search campaign (campaign.json, summary.json, Ray Tune's trial state)"""
    return join(TUNE, name)


def compare_run(name: str) -> str:
    """compare/<compare.name>/: one verdict (compare.json, compare.md, manifest.json)"""
    return join(COMPARE, name)


def teacher_cache(file_name: str) -> str:
    return join(TEACHER_CACHE, file_name)


def item_text_vectors_cache(key: str) -> str:
    """teacher/cache/item_text_vectors-<key>.npy: the backbone's encoding of every item text; `key` names what it
    depends on (items table, token budget, backbone weights)"""
    return teacher_cache(f"item_text_vectors-{key}.npy")


def signals_topk_file(split: str) -> str:
    """topk.parquet for train, topk_<split>.parquet otherwise: a split's file name inside signals/"""
    return "topk.parquet" if split == "train" else f"topk_{split}.parquet"


def signals_hidden_file(split: str) -> str:
    """hidden.parquet for train, hidden_<split>.parquet otherwise: a split's file name inside signals/"""
    return "hidden.parquet" if split == "train" else f"hidden_{split}.parquet"


def manifest_of(folder: str) -> str:
    return join(folder, MANIFEST)


def metrics_of(folder: str) -> str:
    return join(folder, METRICS)


@dataclass(frozen=True)
class ArtifactLayout:
    """The same addresses as local paths under one local root (a plain root, or a URI root's mirror)."""

    root: Path

    def path(self, relative: str) -> Path:
        return self.root / relative

    @property
    def dataset_dir(self) -> Path:
        return self.path(DATASET)

    def table(self, name: str) -> Path:
        return self.path(table(name))

    @property
    def students_dir(self) -> Path:
        return self.path(STUDENTS)

    def student_dir(self, run_name: str) -> Path:
        return self.path(student_run(run_name))

    @property
    def teacher_dir(self) -> Path:
        return self.path(TEACHER)

    @property
    def teacher_checkpoint_dir(self) -> Path:
        """teacher/checkpoint/: the consolidated fp32 teacher"""
        return self.path(TEACHER_CHECKPOINT)

    @property
    def teacher_ds_checkpoint_dir(self) -> Path:
        return self.path(TEACHER_DS_CHECKPOINT)

    @property
    def teacher_ray_dir(self) -> Path:
        return self.path(TEACHER_RAY)

    def teacher_cache(self, file_name: str) -> Path:
        return self.path(teacher_cache(file_name))

    @property
    def signals_dir(self) -> Path:
        """signals/: the teacher's top-K, embeddings and hidden states (rdistill/teacher/signals.py)"""
        return self.path(SIGNALS)

    @property
    def serving_model_dir(self) -> Path:
        """serving/model/: the exported student the endpoint loads (rdistill/export.py)"""
        return self.path(SERVING_MODEL)

    def tune_campaign_dir(self, name: str) -> Path:
        return self.path(tune_campaign(name))

    @property
    def report_dir(self) -> Path:
        return self.path(REPORT)

    @property
    def pipeline_state(self) -> Path:
        return self.path(PIPELINE_STATE)


@dataclass(frozen=True)
class Address:
    """One artifact a stage reads or writes: its relative name and the file that marks it complete (a folder is
    pulled or pushed only whole; `marker=None` for single files and for folders without one)."""

    path: str
    marker: str | None = MANIFEST
