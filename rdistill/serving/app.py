"""The Ray Serve application: a FastAPI ingress over one exported student, requests scored in batches.

Thin on purpose: request models, validation and scoring live in rdistill/serving/service.py; this module only
wires them into Serve, and is the one module of the package that imports Ray at import time (so that
`import rdistill.serving` stays free of it). Entry points:

- `app_builder(args)`: the import_path of serve/config.yaml, `rdistill.serving.app:app_builder` (`serve run`,
  `serve deploy`, KubeRay serveConfigV2); `args` are the application's `args:` (ServeSettings).
- `build_app(settings, ...)`: the same from Python, with deployment options (rdistill.serving.local.run_local).

Routes: POST /recommend, GET /model (behind the bearer token when auth is on), GET /healthz, GET /openapi.json and
GET /docs (never behind auth: probes need /healthz, and the schema and its UI hold no data).
"""

# No `from __future__ import annotations` here: Serve's ingress rebuilds these methods, and FastAPI must see
# `request: Request` as the real class, not a string, to inject the request.
import asyncio
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse
from ray import serve

from rdistill.serving.service import (
    RECOMMEND_OPENAPI,
    ModelDetails,
    Recommender,
    RecommendResponse,
    SafeJSONResponse,
    ScoringRequest,
    ServeSettings,
    add_error_handlers,
    check_batching,
    read_body,
    token_for,
)

DEPLOYMENT_NAME = "Recommender"
DEFAULT_MAX_ONGOING_REQUESTS = 32

# The built-in /docs and /openapi.json are replaced by routes below (a deployment's methods), which give Swagger UI
# the schema's URL under the application's route prefix. Neither is behind auth: they hold no data.
api = FastAPI(title="rdistill recommender", version="1", openapi_url=None, docs_url=None, redoc_url=None,
              description="Next-item recommendations from a distilled sequential recommender.")
add_error_handlers(api)


def openapi_schema() -> dict[str, Any]:
    """FastAPI's schema (built once, cached by FastAPI) with the bearer token declared, so Swagger UI's
    Authorize button can send it to /recommend and /model when auth is on."""
    schema = api.openapi()
    if "bearer" not in schema.setdefault("components", {}).get("securitySchemes", {}):
        schema["components"].setdefault("securitySchemes", {})["bearer"] = {"type": "http", "scheme": "bearer"}
        for path in ("/recommend", "/model"):
            for operation in schema["paths"].get(path, {}).values():
                operation["security"] = [{}, {"bearer": []}]  # no token (auth off) or a bearer token
    return schema


@serve.deployment(name=DEPLOYMENT_NAME, max_ongoing_requests=DEFAULT_MAX_ONGOING_REQUESTS,
                  ray_actor_options={"num_cpus": 0.5}, health_check_period_s=5, graceful_shutdown_timeout_s=10)
@serve.ingress(api)
class RecommenderDeployment:
    """One replica: loads the exported model and its item table once, then answers requests."""

    def __init__(self, settings: dict[str, Any]):
        self.settings = ServeSettings.model_validate(settings)
        token_for(self.settings)  # require_auth without a token: refuse to start, first thing (fail closed)
        # The YAML's deployments: section may override max_ongoing_requests after the builder ran: check the
        # value this replica really got.
        check_batching(self.settings.max_batch_size, serve.get_replica_context()._deployment_config.max_ongoing_requests)
        self.recommender = Recommender(self.settings)
        self._score.set_max_batch_size(self.settings.max_batch_size)
        self._score.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)  # replaced in __init__ by the settings
    async def _score(self, requests: list[ScoringRequest]) -> list[RecommendResponse]:
        # In a worker thread (torch releases the GIL), so the replica keeps accepting requests for the next batch.
        return await asyncio.to_thread(self.recommender.score, requests)

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok", "version": self.recommender.info.version}

    @api.post("/recommend", response_model=RecommendResponse, openapi_extra=RECOMMEND_OPENAPI)
    async def recommend(self, request: Request) -> JSONResponse:
        """Top-k next items for a history of item ids (see RecommendRequest in the schema)."""
        self.recommender.authorize(request.headers.get("authorization"))
        body = await read_body(request.stream(), request.headers.get("content-length"),
                               self.settings.max_body_bytes, self.settings.body_timeout_s)
        scoring = self.recommender.parse(body, request.headers.get("content-type"))
        response = await self._score(scoring)
        return SafeJSONResponse(response.model_dump(mode="json"))

    @api.get("/model", response_model=ModelDetails)
    async def model(self, request: Request) -> JSONResponse:
        """The served model: name, version, training config, metrics and lineage from its export."""
        self.recommender.authorize(request.headers.get("authorization"))
        return JSONResponse(self.recommender.details().model_dump(mode="json"))

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(self) -> JSONResponse:
        return JSONResponse(openapi_schema())

    @api.get("/docs", include_in_schema=False)
    async def docs(self, request: Request):
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title="rdistill recommender")


def build_app(settings: ServeSettings, *, num_replicas: int | None = None, autoscaling_config: dict | None = None,
              max_ongoing_requests: int | None = None, num_cpus_per_replica: float | None = None,
              ray_actor_options: dict | None = None):
    """The application for `settings`, with deployment options set from Python (None keeps the default).

    Fails fast (ConfigError) when max_ongoing_requests < max_batch_size; replicas check again at start-up,
    since a Serve config's deployments: section can still override the value."""
    check_batching(settings.max_batch_size, max_ongoing_requests or DEFAULT_MAX_ONGOING_REQUESTS)
    options: dict[str, Any] = {}
    if autoscaling_config is not None:
        options["autoscaling_config"] = autoscaling_config
    elif num_replicas is not None:
        options["num_replicas"] = num_replicas
    if max_ongoing_requests is not None:
        options["max_ongoing_requests"] = max_ongoing_requests
    actor_options = dict(ray_actor_options or {"num_cpus": 0.5})
    if num_cpus_per_replica is not None:
        actor_options["num_cpus"] = num_cpus_per_replica
    options["ray_actor_options"] = actor_options
    return RecommenderDeployment.options(**options).bind(settings.model_dump())


def app_builder(args: dict[str, Any]):
    """Serve's application builder (import_path `rdistill.serving.app:app_builder`): `args` are ServeSettings fields."""
    settings = ServeSettings.model_validate(args)
    # A relative model_dir means the caller's working directory (where `serve run` was started), not the
    # replica's, which Ray chooses. A URI (s3://bucket/run/serving/model) is pulled by each replica.
    if "://" not in settings.model_dir:
        settings.model_dir = str(Path(settings.model_dir).resolve())
    return build_app(settings)
