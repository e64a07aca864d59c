"""The recommendation endpoint: validation and scoring units (no Ray), then real Ray Serve over real HTTP.

The integration part starts one Serve instance for the module on a free 127.0.0.1 port with three applications:
`main` (2 replicas, scoring with the export's ONNX graph: correctness, validation, hostile input, a replica
killed under load), `secure` (bearer token on, scoring with torch) and `swap` (a model swapped under a steady
request stream). Last, `run_local(blocking=True)` serves from a process of its own (its own Ray) until SIGTERM.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from rdistill.artifacts import ArtifactLayout
from rdistill.data.dataset import pad_history_lists
from rdistill.errors import ConfigError
from rdistill.evaluate import mask_history
from rdistill.export import export_student, load_exported
from rdistill.onnx_scoring import runtime_name, scorer_for
from rdistill.models import build_student
from rdistill.serving import (
    RECOMMEND_OPENAPI,
    Catalogue,
    RecommendRequest,
    ScoringRequest,
    ServeSettings,
    ServingError,
    bare_fastapi_app,
    check_batching,
    is_authorized,
    parse_recommend_body,
    read_body,
    score_batch,
)

# On a busy 2-core machine Serve's HTTP proxy can take longer than its default 5 s readiness check to start,
# and the controller then kills and restarts it in a loop. Only takes effect if this module starts Ray.
os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")

MAX_LEN = 8  # tiny_config's data.max_len: histories longer than this are truncated
TOKEN = "s3cret-token"
TOKEN_ENV = "RDISTILL_TEST_SERVE_TOKEN"
BODY_LIMIT = 8192
STALL_DEADLINE_S = 3.0  # the `secure` app's body_timeout_s


# ------------------------------------------------------------------------------------------------ fixtures


def export_random_student(tiny_root: Path, out: Path, seed: int) -> Path:
    """A SASRec with random weights (scoring correctness needs no training), exported with the tiny items."""
    items = pq.read_table(ArtifactLayout(tiny_root / "artifacts").dataset_dir / "items.parquet")
    torch.manual_seed(seed)
    model = build_student("sasrec", n_items=items.num_rows, max_len=MAX_LEN,
                          params={"hidden_size": 16, "dropout": 0.0}).eval()
    return export_student(model, items, out, metrics={"valid": {"ndcg_at_10": 0.5}}, config={"seed": seed},
                          lineage={"source": f"random-seed{seed}"})


@pytest.fixture(scope="module")
def model_dirs(tiny_root, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("serve-models")
    return export_random_student(tiny_root, root / "a", seed=1), export_random_student(tiny_root, root / "b", seed=2)


@pytest.fixture(scope="module")
def exported(model_dirs):
    return load_exported(model_dirs[0])


def direct_top(model, history_idx: list[int], k: int, exclude_history: bool) -> list[tuple[int, float]]:
    """The reference: model.scores on the most recent max_len items + mask_history + topk."""
    with torch.no_grad():
        scores = model.scores(pad_history_lists([history_idx[-model.max_len:]], model.max_len)).float()
    if exclude_history:
        mask_history(scores, torch.tensor([history_idx]))
    values, indices = scores.topk(min(k, scores.shape[1]), dim=1)
    return [(i, s) for i, s in zip(indices[0].tolist(), values[0].tolist()) if math.isfinite(s)]


ITEM_IDS: list[str] = []  # item_idx n is ITEM_IDS[n - 1]; filled from the exported item table below


@pytest.fixture(scope="module", autouse=True)
def item_ids(exported):
    ITEM_IDS[:] = exported.items.column("item_id").to_pylist()


def ids(history_idx: list[int]) -> list[str]:
    return [ITEM_IDS[idx - 1] for idx in history_idx]


# ------------------------------------------------------------------------------------------------ units (no Ray)


def parse(payload, content_type="application/json", limit=BODY_LIMIT) -> RecommendRequest:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_recommend_body(body, content_type, limit)


def status_of(call) -> int:
    with pytest.raises(ServingError) as caught:
        call()
    return caught.value.status


def test_parse_defaults_and_strict_types():
    request = parse({"history": ["i1", "i2"]})
    assert (request.k, request.exclude_history, request.ignore_unknown) == (10, True, False)
    assert parse({"history": ["i1"], "k": 100, "exclude_history": False}).k == 100
    for bad in [{"history": ["i1"], "k": 0}, {"history": ["i1"], "k": 101}, {"history": ["i1"], "k": 10**100},
                {"history": ["i1"], "k": "10"}, {"history": ["i1"], "k": 2.0}, {"history": ["i1"], "k": True},
                {"history": [1, 2]}, {"history": "i1"}, {"history": None}, {}, {"history": ["i1"], "extra": 1},
                {"history": ["i1"], "exclude_history": "yes"}, [], "text", 5, None]:
        assert status_of(lambda bad=bad: parse(bad)) == 422, bad


def test_parse_refuses_bodies_before_looking_at_them():
    assert status_of(lambda: parse(b"x" * (BODY_LIMIT + 1))) == 413
    assert status_of(lambda: parse(b"{not json")) == 400
    assert status_of(lambda: parse(b"\xff\xfe")) == 400
    assert status_of(lambda: parse(b"[" * 100_000 + b"]" * 100_000, limit=10**6)) in (400, 422)
    deep_value = b'{"history": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    assert status_of(lambda: parse(deep_value, limit=10**6)) in (400, 422)
    assert status_of(lambda: parse({"history": ["i1"]}, content_type="text/plain")) == 415
    assert parse({"history": ["i1"]}, content_type="application/json; charset=utf-8").history == ["i1"]
    assert parse({"history": ["i1"]}, content_type=None).history == ["i1"]


def test_catalogue_resolves_ids_and_names_unknown_ones(exported):
    catalogue = Catalogue.from_table(exported.items)
    assert catalogue.resolve(parse({"history": ids([1, 40])})).history_idx == (1, 40)
    with pytest.raises(ServingError) as caught:
        catalogue.resolve(parse({"history": ["i0", "nope", "x" * 1000]}))
    assert caught.value.status == 422 and "'nope'" in caught.value.message
    assert caught.value.extra["unknown_item_ids"][0] == "nope" and len(caught.value.extra["unknown_item_ids"][1]) < 100
    dropped = catalogue.resolve(parse({"history": ids([1]) + ["nope"] + ids([3]), "ignore_unknown": True}))
    assert dropped.history_idx == (1, 3) and dropped.ignored_item_ids == ("nope",)
    assert status_of(lambda: catalogue.resolve(parse({"history": ["nope"], "ignore_unknown": True}))) == 422
    assert status_of(lambda: catalogue.resolve(parse({"history": []}))) == 422


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_score_batch_matches_the_model_scored_alone(exported, runtime):
    model = exported.model
    scorer = scorer_for(model, exported.directory, runtime)
    assert runtime_name(scorer) == runtime
    generator = torch.Generator().manual_seed(0)
    requests = []
    for length in [1, 3, 8, 12, 30]:
        history = (torch.randint(1, model.n_items + 1, (length,), generator=generator)).tolist()
        for exclude, k in [(True, 5), (False, 17), (True, 100)]:
            requests.append(ScoringRequest(history_idx=tuple(history), k=k, exclude_history=exclude))
    results = score_batch(scorer, requests)  # one batch: mixed lengths, k and exclusion
    for request, top in zip(requests, results):
        expected = direct_top(model, list(request.history_idx), request.k, request.exclude_history)
        assert [i for i, _ in top] == [i for i, _ in expected]
        assert [s for _, s in top] == pytest.approx([s for _, s in expected], rel=1e-4, abs=1e-5)
        assert all(math.isfinite(s) for _, s in top)
        if request.exclude_history:
            assert not set(request.history_idx) & {i for i, _ in top}


def test_long_history_uses_the_most_recent_items_and_k_beyond_the_catalogue(exported):
    model = exported.model
    recent = list(range(10, 10 + MAX_LEN))
    a = ScoringRequest(history_idx=tuple([1, 2, 3] + recent), k=40, exclude_history=False)
    b = ScoringRequest(history_idx=tuple([30, 31] + recent), k=40, exclude_history=False)
    top_a, top_b = score_batch(model, [a, b])
    expected = direct_top(model, recent, 40, exclude_history=False)
    for top in (top_a, top_b):
        assert [i for i, _ in top] == [i for i, _ in expected]
        assert [s for _, s in top] == pytest.approx([s for _, s in expected], rel=1e-4, abs=1e-5)
    # every item but one is in the history: only one is left to recommend
    everything_but_one = ScoringRequest(history_idx=tuple(range(1, model.n_items)), k=100, exclude_history=True)
    (top,) = score_batch(model, [everything_but_one])
    assert [i for i, _ in top] == [model.n_items]


def test_bearer_token_and_batching_rules():
    assert is_authorized(None, None) and is_authorized("whatever", None)
    assert is_authorized(f"Bearer {TOKEN}", TOKEN) and is_authorized(f"bearer {TOKEN}", TOKEN)
    for header in [None, "", TOKEN, f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer"]:
        assert not is_authorized(header, TOKEN), header
    check_batching(16, 16)
    with pytest.raises(ConfigError, match=r"max_ongoing_requests \(8\) must be >= max_batch_size \(16\)"):
        check_batching(16, 8)


def test_build_app_refuses_unfillable_batches(model_dirs):
    from rdistill.serving.app import build_app

    settings = ServeSettings(model_dir=str(model_dirs[0]), max_batch_size=64)
    with pytest.raises(ConfigError, match="max_ongoing_requests"):
        build_app(settings, max_ongoing_requests=8)
    with pytest.raises(ConfigError, match="max_ongoing_requests"):
        build_app(settings)  # the deployment's default (32) is too small for 64 as well


def test_config_yaml_is_a_valid_serve_config(model_dirs):
    import importlib

    import yaml
    from ray.serve.schema import ServeDeploySchema

    from rdistill.serving.app import DEPLOYMENT_NAME

    config = ServeDeploySchema.model_validate(yaml.safe_load((Path(__file__).parents[1] / "serve" / "config.yaml").read_text()))
    assert config.http_options.host == "127.0.0.1"
    (app,) = config.applications
    assert app.import_path == "rdistill.serving.app:app_builder"  # the library, not the serve/app.py shim
    module, _, name = app.import_path.partition(":")
    builder = getattr(importlib.import_module(module), name)
    settings = ServeSettings.model_validate(app.args)  # every arg is a known setting
    (deployment,) = app.deployments
    assert deployment.name == DEPLOYMENT_NAME and deployment.max_ongoing_requests >= settings.max_batch_size
    assert deployment.autoscaling_config["max_replicas"] > deployment.autoscaling_config["min_replicas"]
    application = builder({**app.args, "model_dir": str(model_dirs[0])})
    assert type(application).__name__ == "Application"


def test_bare_app_answers_like_the_model(model_dirs, exported):
    from starlette.testclient import TestClient

    with TestClient(bare_fastapi_app(ServeSettings(model_dir=str(model_dirs[0])))) as client:
        history = [5, 9, 2]
        response = client.post("/recommend", json={"history": ids(history), "k": 7})
        assert response.status_code == 200
        assert [item["item_id"] for item in response.json()["items"]] == ids(
            [i for i, _ in direct_top(exported.model, history, 7, True)])
        assert client.post("/recommend", json={"history": ["zzz"]}).status_code == 422
        assert client.get("/healthz").json()["status"] == "ok"


LONE_SURROGATE = b'{"history": ["\\ud800"]}'  # a valid JSON escape of a string UTF-8 cannot encode
KNOWN_AND_LONE_SURROGATE = b'{"history": ["i1", "\\udfff"], "ignore_unknown": true}'


def test_lone_surrogate_ids_are_echoed_escaped_not_a_500(model_dirs):
    from starlette.testclient import TestClient

    app = bare_fastapi_app(ServeSettings(model_dir=str(model_dirs[0])))
    with TestClient(app, raise_server_exceptions=False) as client:
        post = lambda body: client.post("/recommend", content=body, headers={"content-type": "application/json"})
        unknown = post(LONE_SURROGATE)
        assert unknown.status_code == 422, unknown.text
        assert unknown.json()["unknown_item_ids"] == ["\\ud800"]  # the escape, as text
        ignored = post(KNOWN_AND_LONE_SURROGATE)
        assert ignored.status_code == 200, ignored.text
        assert ignored.json()["ignored_item_ids"] == ["\\udfff"] and ignored.json()["items"]
        extra_key = post(b'{"history": ["i1"], "\\ud800": 1}')  # an unknown field's name is echoed in loc
        assert extra_key.status_code == 422 and isinstance(extra_key.json()["detail"], str)


def test_401_says_bearer_and_the_schema_refuses_an_empty_history(model_dirs, monkeypatch):
    from starlette.testclient import TestClient

    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with TestClient(bare_fastapi_app(ServeSettings(model_dir=str(model_dirs[0]), auth_token_env=TOKEN_ENV))) as client:
        refused = client.post("/recommend", json={"history": ["i1"]})
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        good = client.post("/recommend", json={"history": ["i1"]}, headers={"authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200
    schema = RECOMMEND_OPENAPI["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["history"]["minItems"] == 1
    assert status_of(lambda: parse({"history": []})) == 422


def test_require_auth_fails_closed_without_a_token(model_dirs, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    settings = ServeSettings(model_dir=str(model_dirs[0]), auth_token_env=TOKEN_ENV, require_auth=True)
    with pytest.raises(ConfigError, match=f"require_auth is on but the environment variable {TOKEN_ENV}"):
        bare_fastapi_app(settings)
    monkeypatch.setenv(TOKEN_ENV, "")  # empty is as good as unset
    with pytest.raises(ConfigError, match=TOKEN_ENV):
        bare_fastapi_app(settings)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    bare_fastapi_app(settings)
    monkeypatch.delenv(TOKEN_ENV)
    bare_fastapi_app(settings.model_copy(update={"require_auth": False}))  # the loopback default: auth optional


@pytest.mark.parametrize("host,required", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                           ("127.0.0.2", False), ("0.0.0.0", True), ("::", True),
                                           ("10.0.0.5", True), ("serve.example.org", True)])
def test_run_local_requires_auth_off_loopback(model_dirs, monkeypatch, host, required):
    import rdistill.serving.app as serve_app
    from rdistill.serving import local

    seen = {}
    monkeypatch.setattr(serve_app, "build_app", lambda settings, **options: seen.setdefault("settings", settings))
    monkeypatch.setattr(local, "deploy", lambda *args, **kwargs: "http://x")
    local.run_local(model_dirs[0], host=host, blocking=False)
    assert seen["settings"].require_auth is required
    seen.clear()
    local.run_local(model_dirs[0], host=host, require_auth=False, blocking=False)  # an explicit choice wins
    assert seen["settings"].require_auth is False


def test_read_body_gives_up_on_a_stalled_body_with_408():
    import asyncio

    async def stalled():
        yield b'{"history": '
        await asyncio.sleep(3600)
        yield b"[]}"

    async def trickle():  # a byte at a time, each in time, the whole too late
        for byte in b'{"history": ["i1"]}':
            await asyncio.sleep(0.05)
            yield bytes([byte])

    async def whole():
        yield b'{"history": ["i1"]}'

    for body in (stalled, trickle):
        started = time.monotonic()
        with pytest.raises(ServingError) as caught:
            asyncio.run(read_body(body(), None, BODY_LIMIT, timeout_s=0.3))
        assert caught.value.status == 408 and time.monotonic() - started < 2
        assert caught.value.headers == {"Connection": "close"}
    assert asyncio.run(read_body(whole(), None, BODY_LIMIT, timeout_s=0.3)) == b'{"history": ["i1"]}'
    assert ServeSettings(model_dir="m").body_timeout_s == 10.0


# ------------------------------------------------------------------------------------------------ real Ray Serve


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def replica_actors(app_name: str) -> list[str]:
    import ray

    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(f"SERVE_REPLICA::{app_name}#")]


def running_replicas(app_name: str) -> int:
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is None:
        return 0
    return sum(d.replica_states.get("RUNNING", 0) for d in app.deployments.values())


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def serve_url(ray_cluster, model_dirs):
    from ray import serve

    from rdistill.serving.app import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})

    def deploy(name: str, model_dir: Path, replicas: int = 1, actor_options: dict | None = None, **settings):
        app = build_app(ServeSettings(model_dir=str(model_dir), max_batch_size=8, batch_wait_timeout_s=0.01,
                                      max_body_bytes=BODY_LIMIT, **settings),
                        num_replicas=replicas, max_ongoing_requests=16,
                        ray_actor_options={"num_cpus": 0.25, **(actor_options or {})})
        serve.run(app, name=name, route_prefix=f"/{name}")

    deploy("main", model_dirs[0], replicas=2)
    deploy("secure", model_dirs[0], auth_token_env=TOKEN_ENV, require_auth=True, runtime="torch",
           body_timeout_s=STALL_DEADLINE_S, actor_options={"runtime_env": {"env_vars": {TOKEN_ENV: TOKEN}}})
    deploy("swap", model_dirs[0])
    base = f"http://127.0.0.1:{port}"
    yield base, deploy
    serve.shutdown()


@pytest.fixture(scope="module")
def client(serve_url):
    import httpx

    with httpx.Client(base_url=serve_url[0], timeout=30) as http:
        yield http


@pytest.mark.integration
def test_recommend_matches_the_model_scored_directly(client, exported):
    model = exported.model
    generator = torch.Generator().manual_seed(1)
    for length, k, exclude in [(1, 10, True), (4, 5, False), (8, 40, True), (15, 100, False), (20, 3, True)]:
        history = torch.randint(1, model.n_items + 1, (length,), generator=generator).tolist()
        response = client.post("/main/recommend", json={"history": ids(history), "k": k, "exclude_history": exclude})
        assert response.status_code == 200, response.text
        body = response.json()
        expected = direct_top(model, history, k, exclude)
        assert [item["item_id"] for item in body["items"]] == ids([i for i, _ in expected])
        assert [item["score"] for item in body["items"]] == pytest.approx([s for _, s in expected], rel=1e-4, abs=1e-5)
        assert body["items"][0]["text"] == f"item number {ids([expected[0][0]])[0][1:]}"
        assert body["model"] == {"name": "sasrec", "version": exported.version, "trained_at": exported.trained_at}
        if exclude:
            assert not set(ids(history)) & {item["item_id"] for item in body["items"]}


@pytest.mark.integration
def test_concurrent_requests_are_batched_and_each_answered_correctly(client, exported):
    histories = [[(7 * n + j) % 40 + 1 for j in range(1 + n % 11)] for n in range(48)]

    def ask(history):
        return client.post("/main/recommend", json={"history": ids(history), "k": 5}).json()

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(ask, histories))
    for history, answer in zip(histories, answers):
        assert [item["item_id"] for item in answer["items"]] == ids(
            [i for i, _ in direct_top(exported.model, history, 5, True)])


@pytest.mark.integration
def test_validation_rules_over_http(client, exported):
    post = lambda body: client.post("/main/recommend", json=body)
    unknown = post({"history": ["i1", "ghost-1", "ghost-2"]})
    assert unknown.status_code == 422 and unknown.json()["unknown_item_ids"] == ["ghost-1", "ghost-2"]
    assert "ghost-1" in unknown.json()["detail"]
    ignored = post({"history": ids([2]) + ["ghost-1"] + ids([3]), "ignore_unknown": True, "k": 4})
    assert ignored.status_code == 200 and ignored.json()["ignored_item_ids"] == ["ghost-1"]
    assert [item["item_id"] for item in ignored.json()["items"]] == ids(
        [i for i, _ in direct_top(exported.model, [2, 3], 4, True)])
    assert post({"history": ["ghost-1"], "ignore_unknown": True}).status_code == 422
    assert post({"history": []}).status_code == 422
    for k in (0, 101, 10**100, -1, "5", 1.5):
        response = post({"history": ["i1"], "k": k})
        assert response.status_code == 422 and "k" in response.json()["detail"], k

    # an over-long history: only the most recent max_len items count
    recent = [3, 1, 4, 1, 5, 9, 2, 6]
    long_a = post({"history": ids([11, 12, 13, 14] + recent), "exclude_history": False, "k": 10}).json()
    long_b = post({"history": ids([20] + recent), "exclude_history": False, "k": 10}).json()
    expected = ids([i for i, _ in direct_top(exported.model, recent, 10, False)])
    assert [item["item_id"] for item in long_a["items"]] == [item["item_id"] for item in long_b["items"]] == expected

    # k beyond what is left after exclusion returns fewer items, all with finite scores
    nearly_all = post({"history": ids(list(range(1, 39))), "k": 100}).json()["items"]
    assert sorted(item["item_id"] for item in nearly_all) == sorted(ids([39, 40]))

    huge = client.post("/main/recommend", content=b'{"history": ["' + b"i1\", \"" * 200_000 + b'i1"]}',
                       headers={"content-type": "application/json"})
    assert huge.status_code == 413 and "limit" in huge.json()["detail"]


@pytest.mark.integration
def test_model_details_health_and_schema(client, exported):
    details = client.get("/main/model").json()
    assert details["model"]["version"] == exported.version and details["max_len"] == MAX_LEN
    assert details["config"] == {"seed": 1} and details["lineage"] == {"source": "random-seed1"}
    assert details["metrics"] == {"valid": {"ndcg_at_10": 0.5}} and details["num_parameters"] > 0
    assert details["runtime"] == "onnx"  # the export holds the graph, and `auto` serves with it
    assert client.get("/main/healthz").json()["status"] == "ok"
    schema = client.get("/main/openapi.json").json()
    assert {"/recommend", "/model", "/healthz"} <= set(schema["paths"])
    assert "history" in schema["paths"]["/recommend"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert "swagger-ui" in client.get("/main/docs").text


@pytest.mark.integration
def test_bearer_token_guards_recommend_and_model_but_not_health_or_schema(client):
    good = {"authorization": f"Bearer {TOKEN}"}
    for method, path in [("POST", "/secure/recommend"), ("GET", "/secure/model")]:
        for headers in [{}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}]:
            response = client.request(method, path, json={"history": ["i1"]}, headers=headers)
            assert response.status_code == 401 and "token" in response.json()["detail"], (path, headers)
            assert response.headers["www-authenticate"].startswith("Bearer"), (path, headers)
        assert client.request(method, path, json={"history": ["i1"]}, headers=good).status_code == 200, path
    # probes need /healthz; the schema and Swagger UI hold no data, and /docs must be able to load the schema
    assert client.get("/secure/healthz").status_code == 200
    schema = client.get("/secure/openapi.json")
    assert schema.status_code == 200 and schema.json()["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "/secure/openapi.json" in client.get("/secure/docs").text
    # auth is off where no token is configured
    assert client.get("/main/model").status_code == 200


@pytest.mark.integration
def test_onnx_and_torch_replicas_give_the_same_answers(client):
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert client.get("/main/model").json()["runtime"] == "onnx"
    assert client.get("/secure/model", headers=auth).json()["runtime"] == "torch"
    for body in [{"history": ids([3, 1, 4, 1, 5]), "k": 20}, {"history": ids(range(1, 30)), "k": 7},
                 {"history": ids([9]), "k": 100, "exclude_history": False}]:
        onnx = client.post("/main/recommend", json=body).json()["items"]
        torch_ = client.post("/secure/recommend", json=body, headers=auth).json()["items"]
        assert [item["item_id"] for item in onnx] == [item["item_id"] for item in torch_]
        assert [item["score"] for item in onnx] == pytest.approx([item["score"] for item in torch_], rel=1e-4,
                                                                 abs=1e-5)


HOSTILE = [
    ("not json", b"{history: [i1]", "application/json", 400),
    ("wrong content type", b'{"history": ["i1"]}', "text/plain", 415),
    ("form body", b"history=i1", "application/x-www-form-urlencoded", 415),
    ("json array", b'["i1"]', "application/json", 422),
    ("json null", b"null", "application/json", 422),
    ("empty body", b"", "application/json", 400),
    ("ints for ids", b'{"history": [1, 2]}', "application/json", 422),
    ("nested ids", b'{"history": [["i1"]]}', "application/json", 422),
    ("huge k", b'{"history": ["i1"], "k": ' + b"9" * 4000 + b"}", "application/json", None),
    ("float k", b'{"history": ["i1"], "k": 1e308}', "application/json", 422),
    ("nan k", b'{"history": ["i1"], "k": NaN}', "application/json", 422),
    ("deep nesting", b"[" * 4000 + b"]" * 4000, "application/json", 400),
    ("deep nested value", b'{"history": ' + b"[" * 3000 + b"]" * 3000 + b"}", "application/json", None),
    ("bad utf-8", b'{"history": ["\xff\xfe"]}', "application/json", 400),
    ("null bytes", b'{"history": ["\\u0000"]}', "application/json", 422),
    ("lone surrogate", LONE_SURROGATE, "application/json", 422),
    ("lone surrogate key", b'{"history": ["i1"], "\\ud800": 1}', "application/json", 422),
    ("long id", b'{"history": ["' + b"x" * 7000 + b'"]}', "application/json", 422),
    ("too large", b"{" + b" " * (BODY_LIMIT + 10) + b"}", "application/json", 413),
]


@pytest.mark.integration
@pytest.mark.parametrize("name,body,content_type,status", HOSTILE, ids=[case[0] for case in HOSTILE])
def test_hostile_input_gets_a_json_4xx(client, name, body, content_type, status):
    response = client.post("/main/recommend", content=body, headers={"content-type": content_type})
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:200])
    assert status is None or response.status_code == status, response.text[:200]
    assert isinstance(response.json()["detail"], str)


@pytest.mark.integration
def test_a_lone_surrogate_id_is_ignored_and_echoed_escaped(client):
    response = client.post("/main/recommend", content=KNOWN_AND_LONE_SURROGATE,
                           headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["ignored_item_ids"] == ["\\udfff"] and response.json()["items"]
    unknown = client.post("/main/recommend", content=LONE_SURROGATE, headers={"content-type": "application/json"})
    assert unknown.status_code == 422 and unknown.json()["unknown_item_ids"] == ["\\ud800"]


def stall(port: int, path: str, headers: str = "") -> socket.socket:
    """Send a POST's headers with a Content-Length, and then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  f"Content-Length: 100\r\n{headers}\r\n").encode() + b'{"history": ')
    return sock


@pytest.mark.integration
def test_stalled_bodies_get_408_and_health_stays_answerable(client, serve_url):
    port = int(serve_url[0].rsplit(":", 1)[1])
    auth = f"Authorization: Bearer {TOKEN}\r\n"
    started = time.monotonic()
    stalled = [stall(port, "/secure/recommend", auth) for _ in range(6)]
    try:
        time.sleep(0.5)  # the replica is now waiting on six bodies
        for _ in range(3):
            before = time.monotonic()
            assert client.get("/secure/healthz").status_code == 200
            assert time.monotonic() - before < 1.0
        assert client.post("/secure/recommend", json={"history": ids([1, 2])},
                           headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
        for sock in stalled:
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        elapsed = time.monotonic() - started
        assert STALL_DEADLINE_S - 0.5 < elapsed < STALL_DEADLINE_S + 15, elapsed
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.integration
def test_a_replica_without_its_required_token_refuses_to_start(serve_url, model_dirs):
    from ray import serve

    from rdistill.serving.app import build_app

    missing = "RDISTILL_TEST_TOKEN_NOBODY_SET"
    app = build_app(ServeSettings(model_dir=str(model_dirs[0]), auth_token_env=missing, require_auth=True),
                    num_replicas=1, ray_actor_options={"num_cpus": 0.25})
    try:
        with pytest.raises(RuntimeError, match="Deploying application unguarded failed"):
            serve.run(app, name="unguarded", route_prefix="/unguarded")
        # the reason is what `serve status` shows for the deployment
        deployment = serve.status().applications["unguarded"].deployments["Recommender"]
        assert f"require_auth is on but the environment variable {missing}" in deployment.message, deployment
    finally:
        serve.delete("unguarded")


@pytest.mark.integration
def test_unknown_routes_and_methods_are_json(client):
    assert client.get("/main/nowhere").status_code == 404
    wrong_method = client.get("/main/recommend")
    assert wrong_method.status_code == 405 and "detail" in wrong_method.json()


@pytest.mark.integration
def test_schemathesis_finds_no_server_error(client, serve_url):
    """Property-based fuzzing from the live OpenAPI schema: valid and invalid bodies alike get no 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_dict(client.get("/main/openapi.json").json())
    base = f"{serve_url[0]}/main"
    seen = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        # negative cases need something to break: only POST /recommend has a body (the GETs take no input)
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if operation.method.upper() == "POST" else [])
        for mode in modes:
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=60, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                response = case.call(base_url=base, timeout=30)
                seen[response.status_code] += 1
                assert response.status_code < 500, (case.body, response.status_code, response.text[:300])
                content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type", [""])
                assert content_type[0].startswith("application/json"), content_type

            check()
    assert seen[200] > 0 and sum(seen.values()) > 100, seen  # the GETs take no input: one example each


class RequestStream:
    """Background threads posting /recommend until stopped; records (status, version) and first-try failures."""

    def __init__(self, base_url: str, path: str, threads: int = 3, retries: int = 0):
        import httpx

        self.url, self.retries, self.stop_event = f"{base_url}{path}", retries, threading.Event()
        self.results: list[tuple[int, str | None]] = []
        self.first_try_failures = 0
        self.lock = threading.Lock()
        self.clients = [httpx.Client(timeout=30) for _ in range(threads)]
        self.threads = [threading.Thread(target=self.run, args=(c, n), daemon=True) for n, c in enumerate(self.clients)]

    def post(self, http, n) -> tuple[int, str | None]:
        try:
            response = http.post(self.url, json={"history": ids([n % 40 + 1, 7, 3]), "k": 5})
            version = response.json()["model"]["version"] if response.status_code == 200 else None
            return response.status_code, version
        except Exception as err:  # noqa: BLE001 - a dropped connection counts as a failed request
            return -1, type(err).__name__

    def run(self, http, n) -> None:
        while not self.stop_event.is_set():
            status, version = self.post(http, n)
            attempts = 0
            if status != 200:
                with self.lock:
                    self.first_try_failures += 1
            while status != 200 and attempts < self.retries:
                attempts += 1
                time.sleep(0.2)
                status, version = self.post(http, n)
            with self.lock:
                self.results.append((status, version))
            n += 1

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=60)
        for http in self.clients:
            http.close()


@pytest.mark.integration
def test_a_killed_replica_is_replaced_while_requests_keep_flowing(serve_url):
    import ray

    base, _ = serve_url
    assert running_replicas("main") == 2
    # Requests already inside the killed replica die with it (the proxy cannot know how far they got), so the
    # client retries a failed request once: /recommend is read-only, so a retry is always safe.
    with RequestStream(base, "/main/recommend", threads=3, retries=2) as stream:
        time.sleep(2)
        before = set(replica_actors("main"))
        victim = min(before)
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        # a replacement is a replica actor that was not there before (the status lags the kill by a moment)
        wait_for(lambda: set(replica_actors("main")) - before and running_replicas("main") == 2, 90,
                 "the killed replica to be replaced")
        time.sleep(2)
    statuses = Counter(status for status, _ in stream.results)
    assert statuses[200] == len(stream.results) > 20, statuses
    assert stream.first_try_failures <= 16, stream.first_try_failures  # at most what one replica held in flight
    assert running_replicas("main") == 2


@pytest.mark.integration
def test_model_swap_under_load_drops_no_request(serve_url, model_dirs):
    base, deploy = serve_url
    old, new = (load_exported(d).version for d in model_dirs)
    assert old != new
    with RequestStream(base, "/swap/recommend", threads=3, retries=0) as stream:
        time.sleep(2)
        deploy("swap", model_dirs[1])  # same app name, new model: Serve rolls the replicas over
        time.sleep(3)
    statuses = Counter(status for status, _ in stream.results)
    failures = Counter(detail for status, detail in stream.results if status != 200)  # status or exception name
    assert statuses == {200: len(stream.results)}, (statuses, failures)
    versions = [version for _, version in stream.results]
    assert versions[0] == old and versions[-1] == new and set(versions) == {old, new}
    assert set(versions[-10:]) == {new}  # after the swap only the new model answers


# run_local(blocking=True) in a process of its own; after SIGTERM it prints which Serve actors are left.
BLOCKING_SERVER = """
import json, sys, ray
from rdistill.serving import run_local
url = run_local(sys.argv[1], port=int(sys.argv[2]), ray_address="local", num_cpus_per_replica=0.25, blocking=True)
left = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("SERVE_")]
print(json.dumps({"url": url, "serve_actors_left": left}), flush=True)
"""


def wait_until_answering(url: str, server: subprocess.Popen, timeout_s: float) -> None:
    import httpx

    def answering() -> bool:
        assert server.poll() is None, "the server exited before it answered"
        try:
            return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answering, timeout_s, f"{url} to answer")


@pytest.mark.integration
def test_blocking_run_local_serves_until_sigterm_then_shuts_serve_down(model_dirs, tmp_path):
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # its own Ray in a short private folder (socket paths have a length limit), apart from the module's cluster
    ray_tmp = tempfile.mkdtemp(prefix="rdsv-", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    log_path = tmp_path / "server.log"  # a file, not a pipe: Ray's chatter could fill a pipe nobody reads yet
    with open(log_path, "w") as log_file:
        server = subprocess.Popen([sys.executable, "-c", BLOCKING_SERVER, str(model_dirs[0]), str(port)], env=env,
                                  stdout=log_file, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        try:
            wait_until_answering(url, server, timeout_s=300)
        except AssertionError as err:
            raise AssertionError(f"{err}\n{log_path.read_text()[-4000:]}") from None
        assert httpx.post(f"{url}/recommend", json={"history": ids([1, 2]), "k": 3}, timeout=30).status_code == 200
        # at once, as a script that starts and stops a server would: the handler is in place before the deployment
        server.send_signal(signal.SIGTERM)  # the process only, as `kill` or Kubernetes would
        server.wait(timeout=180)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)  # the server and the Ray it started
            server.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    output = log_path.read_text()
    assert server.returncode == 0, output[-4000:]  # SIGTERM ended serving like Ctrl-C: run_local returned
    result = json.loads(output.strip().splitlines()[-1])
    assert result == {"url": url, "serve_actors_left": []}, output[-4000:]  # and Serve was shut down
