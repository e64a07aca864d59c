"""Typed configuration (rdistill.config): YAML + overrides, strict validation with the dotted key named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from rdistill.config import (
    ARTIFACT_ROOT_ENV,
    DATA_DIR_ENV,
    Config,
    DataConfig,
    EvalConfig,
    apply_overrides,
    config_to_dict,
    load_config,
    parse_override,
)
from rdistill.errors import ConfigError

JOB_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "jobs" / "configs").glob("*.yaml"))


def _config_error(overrides: list[str], *parts: str, path=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


@pytest.fixture
def yaml_file(tmp_path: Path) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(
        "artifact_root: art/x\n"
        "seed: 7\n"
        "data:\n  format: generic\n  path: some/where\n  max_len: 20\n"
        "student:\n  name: gru4rec\n  params: {hidden_size: 32}\n"
        "train:\n  lr: 0.005\n  epochs: 3\n"
        "eval:\n  ks: [20, 5, 5]\n  select_metric: mrr_at_20\n"
    )
    return path


# ------------------------------------------------------------------------------------------ loading


def test_defaults():
    config = load_config(None, [])
    assert config == Config()
    assert config.train.lr == 1e-3
    assert config.eval.ks == [5, 10, 20]
    assert config.eval.select_metric == "ndcg_at_10"
    assert config.student.name == "sasrec" and config.student.params == {}
    assert config.data.format == "movielens" and config.data.root is None


def test_load_yaml(yaml_file):
    config = load_config(yaml_file)
    assert config.artifact_root == "art/x"
    assert config.seed == 7
    assert config.data.format == "generic" and config.data.path == "some/where" and config.data.max_len == 20
    assert config.student.name == "gru4rec" and config.student.params == {"hidden_size": 32}
    assert config.student.model_params().hidden_size == 32
    assert config.train.lr == 0.005 and config.train.epochs == 3
    assert config.train.batch_size == 256  # untouched keys keep their defaults
    assert config.eval.ks == [5, 20]  # sorted, de-duplicated
    assert config.eval.select_metric == "mrr_at_20"


def test_overrides_win_over_yaml(yaml_file):
    config = load_config(yaml_file, ["train.lr=0.01", "student.params.num_layers=2", "seed=1"])
    assert config.train.lr == 0.01 and isinstance(config.train.lr, float)
    assert config.student.params == {"hidden_size": 32, "num_layers": 2}
    assert config.seed == 1
    assert config.train.epochs == 3


def test_override_values_are_yaml_typed():
    config = load_config(None, ["eval.ks=[1, 3]", "eval.select_metric=hr_at_3", "train.grad_clip=null",
                                "train.num_threads=2", "data.min_rating=4", "train.progress=false",
                                "train.run_name=a=b", "data.include_tags=no"])
    assert config.eval.ks == [1, 3]
    assert config.eval.select_metric == "hr_at_3"
    assert config.train.grad_clip is None
    assert config.train.num_threads == 2
    assert config.data.min_rating == 4.0
    assert config.train.progress is False
    assert config.train.run_name == "a=b"
    assert config.data.include_tags is False


def test_override_creates_nested_sections():
    config = load_config(None, ["student.params.hidden_size=16", "student.params.num_heads=4"])
    assert config.student.params == {"hidden_size": 16, "num_heads": 4}
    assert apply_overrides({}, ["a.b.c=1", "a.b.d=[x]", "a.e=~"]) == {"a": {"b": {"c": 1, "d": ["x"]}, "e": None}}


def test_parse_override():
    assert parse_override("train.lr=0.01") == (["train", "lr"], 0.01)
    assert parse_override(" seed = 3") == (["seed"], 3)
    assert parse_override("train.run_name=") == (["train", "run_name"], "")
    assert parse_override("eval.ks=[5, 10]") == (["eval", "ks"], [5, 10])


@pytest.mark.parametrize("override, fragment", [
    ("train.lr", "must look like key.sub=value"),
    ("=3", "must look like key.sub=value"),
    ("train..lr=1", "empty key part"),
    ("train.lr.=1", "empty key part"),
    ("eval.ks=[1", "not valid YAML"),
])
def test_override_syntax_errors(override, fragment):
    _config_error([override], repr(override), fragment)


def test_override_into_a_value_is_an_error():
    _config_error(["seed=1", "seed.x=2"], "'seed.x=2'", "seed is a value, not a section")
    with pytest.raises(ConfigError, match="train.lr is a value"):
        apply_overrides({"train": {"lr": 0.1}}, ["train.lr.x=1"])


def test_missing_config_file(tmp_path):
    _config_error([], str(tmp_path / "nope.yaml"), "does not exist", path=tmp_path / "nope.yaml")


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [unclosed\n")
    _config_error([], str(path), "not valid YAML", path=path)


def test_yaml_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    _config_error([], str(path), "mapping", "list", path=path)


def test_empty_yaml_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert load_config(path) == Config()


# --------------------------------------------------------------------------------------- validation


def test_unknown_key_is_named():
    message = _config_error(["train.lr_rate=0.1"], "train.lr_rate", "unknown key")
    assert "train.lr:" not in message
    _config_error(["learning_rate=1"], "learning_rate: unknown key")
    _config_error(["data.fromat=generic"], "data.fromat: unknown key")


def test_unknown_key_in_yaml_names_file_and_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("train:\n  epoch: 3\n")
    _config_error([], str(path), "train.epoch: unknown key", path=path)


@pytest.mark.parametrize("override, key", [
    ("train.lr=abc", "train.lr"),
    ("train.lr=0", "train.lr"),
    ("train.epochs=many", "train.epochs"),
    ("data.max_len=0", "data.max_len"),
    ("data.min_user_interactions=2", "data.min_user_interactions"),
    ("data.format=xml", "data.format"),
    ("seed=[1, 2]", "seed"),
    ("train.objective=sometimes", "train.objective"),
    ("student=3", "student"),
])
def test_wrong_type_names_the_key(override, key):
    _config_error([override], f"{key}: ")


@pytest.mark.parametrize("override, key", [
    ("train.epochs=true", "train.epochs"),
    ("train.batch_size=false", "train.batch_size"),
    ("train.num_threads=true", "train.num_threads"),
    ("train.lr=true", "train.lr"),
    ("data.max_users=true", "data.max_users"),
    ("teacher.zero_stage=true", "teacher.zero_stage"),
    ("eval.ks=[5, true]", "eval.ks"),
    ("tune.num_samples=true", "tune.num_samples"),
    ("distill.kd.weight=true", "distill.kd.weight"),
    ("seed=true", "seed"),
])
def test_a_boolean_is_not_a_number(override, key):
    _config_error([override], f"{key}: ", "not a boolean")


def test_booleans_still_go_where_booleans_are_due():
    assert load_config(None, ["train.progress=false", "data.include_tags=true"]).train.progress is False
    with pytest.raises(ValidationError, match="not a boolean"):
        load_config(None, []).train.epochs = True  # assignment is held to the same rule


def test_epochs_true_in_yaml_names_file_and_key(tmp_path):
    path = tmp_path / "bool.yaml"
    path.write_text("train:\n  epochs: true\n")
    _config_error([], str(path), "train.epochs", "not a boolean", path=path)


def test_wrong_type_shows_the_value():
    _config_error(["train.lr=abc"], "train.lr", "'abc'")


def test_unknown_student():
    _config_error(["student.name=bert4rec"], "unknown student 'bert4rec'", "sasrec", "gru4rec", "caser")


def test_unknown_student_param_names_dotted_key():
    _config_error(["student.params.hidden_sizee=3"], "student.params.hidden_sizee", "unknown key")


def test_wrong_student_param_type_names_dotted_key():
    _config_error(["student.params.hidden_size=wide"], "student.params.hidden_size", "'wide'")


def test_student_params_checked_against_the_chosen_student():
    # num_heads is a SASRec parameter, not a Caser one
    assert load_config(None, ["student.params.num_heads=4"]).student.params == {"num_heads": 4}
    _config_error(["student.name=caser", "student.params.num_heads=4"], "student.params.num_heads", "unknown key")
    assert load_config(None, ["student.name=caser", "student.params.window=3"]).student.model_params().window == 3


def test_select_metric_must_be_computed():
    assert load_config(None, ["eval.select_metric=mrr_at_20"]).eval.select_metric == "mrr_at_20"
    _config_error(["eval.select_metric=ndcg_at_50"], "select_metric", "'ndcg_at_50'", "ndcg_at_20")
    _config_error(["eval.select_metric=auc"], "select_metric", "'auc'")
    _config_error(["eval.ks=[1, 3]"], "select_metric", "'ndcg_at_10'")
    _config_error(["eval.ks=[]"], "eval.ks", "non-empty")
    _config_error(["eval.ks=[0, 10]"], "eval.ks", "positive")


def test_eval_config_directly():
    assert EvalConfig(ks=[10, 1, 10], select_metric="hr_at_1").ks == [1, 10]
    with pytest.raises(ValidationError):
        EvalConfig(ks=[5], select_metric="ndcg_at_10")


def test_assignment_is_validated():
    config = load_config(None, [])
    with pytest.raises(ValidationError):
        config.train.lr = -1.0
    with pytest.raises(ValidationError):
        config.train.bogus = 1
    assert config.train.lr == 1e-3


# -------------------------------------------------------------------------------------- data.root


def test_data_root_falls_back_to_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    data = DataConfig(path="ml")
    assert data.resolve_root() == tmp_path
    assert data.resolve_path() == tmp_path / "ml"
    explicit = DataConfig(root=str(tmp_path / "other"), path="ml")
    assert explicit.resolve_path() == tmp_path / "other" / "ml"


@pytest.mark.parametrize("env_value", [None, ""])
def test_data_root_missing_is_a_clear_error(monkeypatch, env_value):
    if env_value is None:
        monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    else:
        monkeypatch.setenv(DATA_DIR_ENV, env_value)
    with pytest.raises(ConfigError) as info:
        DataConfig(path="ml").resolve_path()
    assert "data.root" in str(info.value) and DATA_DIR_ENV in str(info.value)


def test_absolute_data_path_needs_no_root(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert DataConfig(path=str(tmp_path / "abs")).resolve_path() == tmp_path / "abs"


def test_data_root_expands_user(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert DataConfig(root="~/data", path="ml").resolve_path() == tmp_path / "data" / "ml"


def test_artifact_root_environment_override(monkeypatch, tmp_path):
    monkeypatch.delenv(ARTIFACT_ROOT_ENV, raising=False)
    config = load_config(None, [f"artifact_root={tmp_path / 'a'}"])
    assert config.artifact_path() == tmp_path / "a"
    monkeypatch.setenv(ARTIFACT_ROOT_ENV, str(tmp_path / "b"))
    assert config.artifact_path() == tmp_path / "b"


def test_object_store_artifact_roots_are_accepted_and_kept_as_uris_not_turned_into_local_folders(monkeypatch):
    monkeypatch.delenv(ARTIFACT_ROOT_ENV, raising=False)
    assert load_config(None, ["artifact_root=s3://bucket/run"]).artifact_root == "s3://bucket/run"  # no network
    _config_error(["artifact_root=://bucket/run"], "artifact_root", "neither a local path nor a URI")
    monkeypatch.setenv(ARTIFACT_ROOT_ENV, "nosuch://bucket/run")
    with pytest.raises(ConfigError, match="'nosuch://bucket/run' is not a filesystem URI pyarrow can open"):
        load_config(None, []).artifact_path()


def test_config_to_dict_is_json_ready_and_round_trips():
    config = load_config(None, ["train.lr=0.01", "student.params.hidden_size=16"])
    payload = json.loads(json.dumps(config_to_dict(config)))
    assert payload["train"]["lr"] == 0.01
    assert payload["student"] == {"name": "sasrec", "params": {"hidden_size": 16}}
    assert Config.model_validate(payload) == config


# ------------------------------------------------------------------------------------------ jobs


def test_job_configs_exist():
    assert len(JOB_CONFIGS) >= 3


@pytest.mark.parametrize("path", JOB_CONFIGS, ids=lambda p: p.name)
def test_job_config_validates(path):
    config = load_config(path)
    assert config.student.model_params() is not None
    assert config.eval.select_metric in {f"{m}_at_{k}" for m in ("hr", "ndcg", "mrr") for k in config.eval.ks}
    assert config.data.min_user_interactions >= 3
    assert config.artifact_root


# ------------------------------------------------------------------------------------- distill.* term blocks


def test_distill_is_one_block_per_registered_term():
    config = load_config(None, ["distill.kd.weight=0.5", "distill.kd.temperature=2", "distill.top_k=3"])
    distill = config_to_dict(config)["distill"]
    assert distill["kd"] == {"weight": 0.5, "temperature": 2.0}
    assert distill["rank"]["weight"] == 0 and distill["embed"] == {"weight": 0.0} and distill["top_k"] == 3
    assert config.distill.uses_teacher() and not load_config(None, []).distill.uses_teacher()
    assert load_config(None, ["distill.init_item_embeddings=teacher"]).distill.uses_teacher()


@pytest.mark.parametrize("old, new, value", [
    ("kd_weight", "kd.weight", 0.7), ("temperature", "kd.temperature", 3.0), ("rank_weight", "rank.weight", 1.0),
    ("position_lambda", "rank.position_lambda", 5.0), ("gamma_position", "rank.gamma_position", 0.1),
    ("gamma_confidence", "rank.gamma_confidence", 0.3), ("gamma_consistency", "rank.gamma_consistency", 0.6),
    ("embed_weight", "embed.weight", 0.3), ("feature_weight", "feature.weight", 2.0),
    ("feature_l2_weight", "feature.l2_weight", 0.5), ("block_ce_weight", "block_ce.weight", 0.4)])
def test_old_flat_distill_keys_map_to_the_new_ones_with_a_warning(caplog, old, new, value):
    with caplog.at_level("WARNING", logger="rdistill.config"):
        config = load_config(None, [f"distill.{old}={value}"])
    assert f"distill.{old} is deprecated: use distill.{new}" in caplog.text
    term, key = new.split(".")
    assert getattr(getattr(config.distill, term), key) == value
    assert old not in config_to_dict(config)["distill"]  # saved configs carry the new keys only


def test_old_keys_in_a_yaml_file_and_over_a_whole_block(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("distill:\n  kd_weight: 1.0\n  temperature: 2.0\n  top_k: 20\n")
    assert load_config(path).distill.kd.model_dump() == {"weight": 1.0, "temperature": 2.0}
    # a tune trial sets an old key over a dumped config, whose blocks hold every key: the old key wins
    raw = config_to_dict(load_config(None, []))
    raw["distill"]["rank_weight"] = 0.9
    assert Config.model_validate(raw).distill.rank.weight == 0.9


def test_unknown_and_invalid_distill_keys_are_named():
    _config_error(["distill.kd_wieght=1"], "distill.kd_wieght: unknown key")
    _config_error(["distill.kd.tempreature=1"], "distill.kd.tempreature: unknown key")
    _config_error(["distill.kd.temperature=0"], "distill.kd.temperature:", "greater than 0")
    _config_error(["distill.temperature=0"], "distill.kd.temperature:", "greater than 0")
    _config_error(["distill.rank.weight=1", "distill.rank.gamma_position=0", "distill.rank.gamma_confidence=0",
                   "distill.rank.gamma_consistency=0"], "distill.rank:", "needs at least one of gamma")


def test_tune_space_with_old_distill_keys_still_validates():
    from rdistill.config import canonical_key, default_search_space

    config = load_config(None, ["tune.space={distill.kd_weight: {type: uniform, low: 0.1, high: 1.0}, "
                                "distill.gamma_position: {type: uniform, low: 0.0, high: 1.0}}"])
    assert set(config.tune.search_space(config.student.name)) == {"distill.kd_weight", "distill.gamma_position"}  # kept as written
    assert canonical_key("distill.gamma_position") == "distill.rank.gamma_position"
    assert canonical_key("train.lr") == "train.lr" and canonical_key("distill.top_k") == "distill.top_k"
    _config_error(["tune.space={distill.kd_weight: {type: uniform, low: 0.1, high: 1.0}, "
                   "distill.kd.weight: {type: uniform, low: 0.1, high: 1.0}}"], "set the same value")
    _config_error(["tune.space={distill.kd.temprature: {type: uniform, low: 0.1, high: 1.0}}"],
                  "tune.space.distill.kd.temprature", "unknown key")
    # the default space speaks the new keys only
    assert all(canonical_key(key) == key for key in default_search_space())
    assert "distill.kd.weight" in default_search_space()
