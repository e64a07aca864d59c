"""Online recommendation for an exported student: request/response models, validation and batch scoring.

rdistill/serving/app.py wires these into a Ray Serve deployment; this module never imports Ray (plain Python,
torch and FastAPI), so the rules a request is held to are unit-testable without a cluster, and the benchmark's
bare uvicorn baseline (`bare_fastapi_app`) runs exactly the same code.

A request is turned into scores in three steps:

1. `read_body` reads the raw body (size limit -> 413, not received within body_timeout_s -> 408), and
   `parse_recommend_body` turns it (content type -> 415, JSON -> 400, schema -> 422) into a `RecommendRequest`;
2. `Catalogue.resolve` maps item ids to item_idx (unknown ids -> 422 naming them, or dropped with
   `ignore_unknown`; nothing left -> 422) into a `ScoringRequest`;
3. `score_batch` scores many `ScoringRequest`s in one forward pass (the model reads only the most recent
   `max_len` items of a history; `exclude_history` masks every item of the full history) and returns top-k.

Every error is a `ServingError(status, message)`; `error_body` is its JSON form, `{"detail": message, ...}`.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from rdistill.errors import ConfigError
from rdistill.onnx_scoring import runtime_name, scorer_for

log = logging.getLogger("rdistill.serving")  # one logger for the package (service and local)

DEFAULT_TOKEN_ENV = "RDISTILL_SERVE_TOKEN"
MAX_K = 100
MAX_NAMED_IDS = 20  # an error message names at most this many unknown ids (a body may hold thousands)
MAX_ID_CHARS = 64  # ... each cut to this many characters


# ---------------------------------------------------------------------------------------------------- settings


class ServeSettings(BaseModel):
    """The application's arguments: the `args:` of an application in a Serve config YAML (see serve/README.md).

    Deployment options (replicas, autoscaling, max_ongoing_requests, CPUs per replica) are not here: they belong
    to the config's `deployments:` section, or to `run_local`'s keyword arguments."""

    model_config = ConfigDict(extra="forbid")

    model_dir: str  # an exported student (`rdistill export` / the tuning winner): serving/model/
    max_batch_size: int = Field(16, ge=1, le=4096)  # requests scored together in one forward pass (@serve.batch)
    batch_wait_timeout_s: float = Field(0.005, ge=0.0, le=1.0)  # how long a batch waits to fill before it runs
    max_body_bytes: int = Field(64 * 1024, ge=256, le=64 * 1024 * 1024)  # larger request bodies get 413
    # a request body not fully received this long after the handler starts reading it gets 408 (a client that
    # sends its headers and then stalls would otherwise hold a replica slot forever)
    body_timeout_s: float = Field(10.0, gt=0.0, le=600.0)
    auth_token_env: str = DEFAULT_TOKEN_ENV  # env var holding the bearer token; unset or empty: no auth
    # fail closed: a replica refuses to start when auth_token_env is unset or empty in its environment, instead
    # of serving without auth (run_local turns it on for a host that is not loopback)
    require_auth: bool = False
    torch_threads: int = Field(1, ge=1, le=256)  # intra-op threads per replica (replicas, not threads, scale out)
    # what scores: the export's ONNX graph with ONNX Runtime (same scores, a fraction of the latency), or the
    # torch model; auto = the graph when the export holds one
    runtime: Literal["auto", "onnx", "torch"] = "auto"


def check_batching(max_batch_size: int, max_ongoing_requests: int) -> None:
    """A replica admits at most max_ongoing_requests requests, so a larger batch could never fill: every batch
    would wait out its full timeout. Ray only logs a warning for this; we refuse to start."""
    if max_ongoing_requests < max_batch_size:
        raise ConfigError(
            f"max_ongoing_requests ({max_ongoing_requests}) must be >= max_batch_size ({max_batch_size}): a "
            "replica admits at most max_ongoing_requests requests at once, so its batches could never fill. "
            "Raise the deployment's max_ongoing_requests or lower the application's max_batch_size.")


def read_token(env_name: str) -> str | None:
    """The bearer token from the environment (None when unset or empty: auth is off)."""
    return os.environ.get(env_name) or None


def token_for(settings: ServeSettings) -> str | None:
    """The bearer token a replica checks, or None (auth off); ConfigError when `require_auth` is on and the
    variable is unset or empty here (fail closed: never serve without auth by accident)."""
    token = read_token(settings.auth_token_env)
    if token is None and settings.require_auth:
        raise ConfigError(
            f"require_auth is on but the environment variable {settings.auth_token_env} (auth_token_env) is unset "
            "or empty where this replica runs: set it to the bearer token in the environment of the Ray "
            "cluster's processes (or the deployment's runtime_env), or set require_auth=false to serve without "
            "auth on a trusted network")
    return token


def is_loopback(host: str) -> bool:
    """True for a host only this machine can reach: localhost, 127.0.0.0/8, ::1."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: assume it is reachable from elsewhere
        return False


def is_authorized(authorization: str | None, token: str | None) -> bool:
    """True when auth is off, or the Authorization header is `Bearer <token>` (compared in constant time)."""
    if token is None:
        return True
    if not authorization:
        return False
    scheme, _, value = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


# ---------------------------------------------------------------------------------------------------- API models


class RecommendRequest(BaseModel):
    """POST /recommend. Strict: ids must be strings, k an integer, flags booleans; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    history: list[StrictStr] = Field(
        ..., min_length=1, description="item ids (the dataset's item_id column), oldest first, most recent last; "
                                       "the model reads the most recent max_len of them (see GET /model)")
    k: StrictInt = Field(10, ge=1, le=MAX_K, description="how many items to return (fewer if fewer are left)")
    exclude_history: StrictBool = Field(True, description="never recommend an item of the history")
    ignore_unknown: StrictBool = Field(False, description="drop unknown ids instead of answering 422")


class RecommendedItem(BaseModel):
    item_id: str
    text: str
    score: float  # the model's raw score (a logit): higher is better; always finite


class ModelInfo(BaseModel):
    name: str
    version: str  # sha256 prefix of the exported weights
    trained_at: str


class RecommendResponse(BaseModel):
    items: list[RecommendedItem]
    model: ModelInfo
    ignored_item_ids: list[str] = Field(default_factory=list, description="unknown ids dropped (ignore_unknown)")


class ModelDetails(BaseModel):
    """GET /model: what is being served and where it came from (the export manifest and metrics)."""

    model: ModelInfo
    n_items: int
    max_len: int
    num_parameters: int
    runtime: str = Field(description="what scores requests: onnx (ONNX Runtime) or torch")
    student: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, Any]
    lineage: dict[str, Any]


class ErrorResponse(BaseModel):
    detail: str


# ---------------------------------------------------------------------------------------------------- errors


class ServingError(Exception):
    """A request the service refuses: an HTTP status and a message for the client (plus optional extra fields)."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return error_body(self.message, **self.extra)


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    return {"detail": message, **extra}


def describe_validation_error(err: ValidationError) -> tuple[str, list[dict[str, Any]]]:
    """A one-line message and a list of {loc, msg} without the offending inputs (which may be huge)."""
    # a loc may hold a client's key (an unknown field): cut and escaped like an echoed id
    errors = [{"loc": [_short(str(part)) for part in e["loc"]], "msg": e["msg"]}
              for e in err.errors(include_input=False)]
    shown = "; ".join(f"{'.'.join(e['loc']) or 'body'}: {e['msg']}" for e in errors[:10])
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    return f"invalid request: {shown}{more}", errors


def _short(item_id: str) -> str:
    """A client's id as an answer may echo it: cut to MAX_ID_CHARS, and lone surrogates (valid JSON escapes such
    as "\\ud800", but not encodable as UTF-8) written as backslash escapes, so the answer can always be encoded."""
    short = item_id if len(item_id) <= MAX_ID_CHARS else item_id[:MAX_ID_CHARS] + "..."
    return short.encode("utf-8", "backslashreplace").decode("utf-8")


class SafeJSONResponse(JSONResponse):
    """JSONResponse that never fails to encode: a string that is not valid UTF-8 (a lone surrogate) is written
    as a JSON escape instead of raising (the last line of defence; ids echoed to clients are escaped first)."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


# ---------------------------------------------------------------------------------------------------- parsing


def check_content_length(content_length: str | None, max_body_bytes: int) -> None:
    """Refuse an announced oversized body before reading it (413); a missing header is checked while reading."""
    if content_length is None:
        return
    try:
        length = int(content_length)
    except ValueError:
        raise ServingError(400, f"Content-Length {content_length[:32]!r} is not an integer") from None
    if length > max_body_bytes:
        raise ServingError(413, f"request body is {length} bytes; the limit is {max_body_bytes}")


def parse_recommend_body(body: bytes, content_type: str | None, max_body_bytes: int) -> RecommendRequest:
    """Raw POST /recommend body -> RecommendRequest, or ServingError 413 / 415 / 400 / 422."""
    if len(body) > max_body_bytes:
        raise ServingError(413, f"request body is over {max_body_bytes} bytes")
    media_type = (content_type or "application/json").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ServingError(415, f"content type {media_type[:64]!r} is not supported; send application/json")
    try:
        payload = json.loads(body)
    except RecursionError:  # deeply nested arrays/objects exhaust the parser's stack
        raise ServingError(400, "request body is nested too deeply to be a recommendation request") from None
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise ServingError(400, f"request body is not valid JSON: {err}") from None
    if not isinstance(payload, dict):
        raise ServingError(422, f"request body must be a JSON object, not {type(payload).__name__}")
    try:
        return RecommendRequest.model_validate(payload)
    except ValidationError as err:
        message, errors = describe_validation_error(err)
        raise ServingError(422, message, errors=errors) from None
    except RecursionError:  # a deeply nested value inside an otherwise valid object
        raise ServingError(422, "invalid request: a value is nested too deeply") from None


# ---------------------------------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class ScoringRequest:
    """One validated request in model terms: item_idx (oldest first, may exceed max_len), k, exclusion flag."""

    history_idx: tuple[int, ...]
    k: int
    exclude_history: bool
    ignored_item_ids: tuple[str, ...] = field(default=())


@dataclass
class Catalogue:
    """The exported item table as lookups: item_id -> item_idx, and item_idx -> (item_id, text)."""

    item_ids: list[str]  # position i is item_idx i + 1
    texts: list[str]
    index: dict[str, int]

    @classmethod
    def from_table(cls, items) -> Catalogue:
        """From the export's items table (item_idx 1..N in order, as load_exported guarantees)."""
        item_ids = [str(item_id) for item_id in items.column("item_id").to_pylist()]
        texts = [text or "" for text in items.column("text").to_pylist()]
        return cls(item_ids=item_ids, texts=texts, index={item_id: i + 1 for i, item_id in enumerate(item_ids)})

    def resolve(self, request: RecommendRequest) -> ScoringRequest:
        """Item ids -> item_idx; unknown ids are a 422 naming them, or dropped with ignore_unknown."""
        history_idx, unknown = [], []
        for item_id in request.history:
            item_idx = self.index.get(item_id)
            if item_idx is None:
                unknown.append(item_id)
            else:
                history_idx.append(item_idx)
        if not request.history:
            raise ServingError(422, "history is empty: send at least one item id")
        distinct_unknown = list(dict.fromkeys(unknown))
        named = [_short(item_id) for item_id in distinct_unknown[:MAX_NAMED_IDS]]
        more = f" (and {len(distinct_unknown) - len(named)} more)" if len(distinct_unknown) > len(named) else ""
        if unknown and not request.ignore_unknown:
            raise ServingError(422, f"unknown item ids: {', '.join(map(repr, named))}{more}; send ids from the "
                                    "model's catalogue or set ignore_unknown=true", unknown_item_ids=named)
        if not history_idx:
            raise ServingError(422, f"no known item in the history (unknown: {', '.join(map(repr, named))}{more})",
                               unknown_item_ids=named)
        return ScoringRequest(history_idx=tuple(history_idx), k=request.k, exclude_history=request.exclude_history,
                              ignored_item_ids=tuple(named))


@torch.inference_mode()
def score_batch(model, requests: list[ScoringRequest]) -> list[list[tuple[int, float]]]:
    """Top-k (item_idx, score) per request, best first, from one forward pass over the whole batch. `model` is
    a student or an OnnxScorer (anything with `scores` and `max_len`).

    The model reads the most recent `model.max_len` items of each history (left-padded, as in training);
    `exclude_history` masks every item of the full history, truncated part included, since the user has seen
    them all. Masked and padding items score -inf and are never returned, so a request may get fewer than k."""
    from rdistill.data.dataset import pad_history_lists
    from rdistill.data.schema import PADDING_IDX

    if not requests:
        return []
    history = pad_history_lists([list(r.history_idx[-model.max_len:]) for r in requests], model.max_len)
    scores = model.scores(history).float()
    scores[:, PADDING_IDX] = float("-inf")
    scores.masked_fill_(scores.isnan(), float("-inf"))  # a NaN must never rank (nor reach JSON)
    for row, request in enumerate(requests):
        if request.exclude_history:
            scores[row, torch.tensor(request.history_idx, dtype=torch.long)] = float("-inf")
    k_max = min(max(r.k for r in requests), scores.shape[1])
    top_scores, top_idx = scores.topk(k_max, dim=1)
    results = []
    for row, request in enumerate(requests):
        pairs = zip(top_idx[row, :request.k].tolist(), top_scores[row, :request.k].tolist())
        results.append([(item_idx, score) for item_idx, score in pairs if math.isfinite(score)])
    return results


# ---------------------------------------------------------------------------------------------------- the service


class Recommender:
    """One loaded exported model with everything a replica needs: validation, batch scoring, responses.

    Framework-free: the Ray Serve deployment (rdistill/serving/app.py) and the bare uvicorn baseline both wrap it."""

    def __init__(self, settings: ServeSettings):
        from rdistill.export import load_exported
        from rdistill.storage import fetch_folder

        self.token = token_for(settings)  # a missing required token stops the start before the model loads
        torch.set_num_threads(settings.torch_threads)
        self.settings = settings
        self.exported = load_exported(fetch_folder(settings.model_dir))  # a URI is pulled to this node first
        self.model = self.exported.model.eval()
        self.scorer = scorer_for(self.model, self.exported.directory, settings.runtime, settings.torch_threads)
        self.catalogue = Catalogue.from_table(self.exported.items)
        self.info = ModelInfo(name=self.exported.name, version=self.exported.version,
                              trained_at=self.exported.trained_at)

    def authorize(self, authorization: str | None) -> None:
        if not is_authorized(authorization, self.token):
            raise ServingError(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                               headers={"WWW-Authenticate": 'Bearer realm="rdistill"'})

    def parse(self, body: bytes, content_type: str | None) -> ScoringRequest:
        request = parse_recommend_body(body, content_type, self.settings.max_body_bytes)
        return self.catalogue.resolve(request)

    def score(self, requests: list[ScoringRequest]) -> list[RecommendResponse]:
        return [self.respond(request, top) for request, top in zip(requests, score_batch(self.scorer, requests))]

    def respond(self, request: ScoringRequest, top: list[tuple[int, float]]) -> RecommendResponse:
        items = [RecommendedItem(item_id=self.catalogue.item_ids[i - 1], text=self.catalogue.texts[i - 1], score=s)
                 for i, s in top]
        return RecommendResponse(items=items, model=self.info, ignored_item_ids=list(request.ignored_item_ids))

    def details(self) -> ModelDetails:
        manifest = self.exported.manifest
        return ModelDetails(model=self.info, n_items=self.model.n_items, max_len=self.model.max_len,
                            num_parameters=self.model.num_parameters(), runtime=runtime_name(self.scorer),
                            student=manifest.get("student", {}),
                            config=manifest.get("config", {}), metrics=self.exported.metrics,
                            lineage=manifest.get("lineage", {}))


async def read_body(receive_chunks, content_length: str | None, max_body_bytes: int,
                    timeout_s: float | None = None) -> bytes:
    """Read a request body from an async iterator of chunks, stopping with 413 as soon as it passes the limit
    (so a client that sends no Content-Length cannot make the replica buffer an unbounded body), and with 408
    when the whole body has not arrived within timeout_s (a client that stalls, or trickles a byte at a time,
    would otherwise hold one of the replica's max_ongoing_requests slots for as long as it likes)."""
    check_content_length(content_length, max_body_bytes)
    chunks: list[bytes] = []

    async def read() -> None:
        size = 0
        async for chunk in receive_chunks:
            size += len(chunk)
            if size > max_body_bytes:
                raise ServingError(413, f"request body is over {max_body_bytes} bytes")
            chunks.append(chunk)

    try:
        async with asyncio.timeout(timeout_s):
            await read()
    except TimeoutError:
        raise ServingError(408, f"request body not received within {timeout_s:g} s",
                           headers={"Connection": "close"}) from None
    return b"".join(chunks)


RECOMMEND_OPENAPI = {
    # the body is parsed by hand (to enforce the size limit before parsing), so describe it to OpenAPI here
    "requestBody": {"required": True, "content": {"application/json": {"schema": RecommendRequest.model_json_schema()}}},
    "responses": {str(status): {"description": text, "content": {"application/json": {"schema": ErrorResponse.model_json_schema()}}}
                  for status, text in [(400, "body is not JSON"), (401, "missing or wrong bearer token"),
                                       (408, "body not received in time (body_timeout_s)"),
                                       (413, "body too large"), (415, "not application/json"),
                                       (422, "invalid request: unknown ids, empty history, k out of range ...")]},
}


def add_error_handlers(api: FastAPI) -> None:
    """JSON for every error FastAPI or Starlette raise by themselves (404, 405, ...) and, as a last resort, for
    an unexpected exception (a 500 that names no internals; the traceback goes to the replica's log)."""
    from starlette.exceptions import HTTPException

    async def serving_error(request, exc: ServingError):
        return SafeJSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def http_error(request, exc: HTTPException):
        return SafeJSONResponse(error_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    async def validation_error(request, exc: RequestValidationError):
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")} for e in exc.errors()]
        shown = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:10])
        return SafeJSONResponse(error_body(f"invalid request: {shown}", errors=errors), status_code=422)

    async def unexpected(request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return SafeJSONResponse(error_body("internal error while answering the request; see the server log"),
                            status_code=500)

    api.add_exception_handler(ServingError, serving_error)
    api.add_exception_handler(HTTPException, http_error)
    api.add_exception_handler(RequestValidationError, validation_error)
    api.add_exception_handler(Exception, unexpected)


def bare_fastapi_app(settings: ServeSettings) -> FastAPI:
    """The same endpoint as a plain FastAPI app in one process, scoring each request alone: the baseline the
    serving benchmark runs under uvicorn against Ray Serve (and a way to serve without Ray at all)."""
    import asyncio

    api = FastAPI(title="rdistill recommender (bare)")
    add_error_handlers(api)
    recommender = Recommender(settings)
    lock = asyncio.Lock()  # one forward pass at a time, like a replica's batch loop

    @api.get("/healthz")
    async def healthz():
        return {"status": "ok", "version": recommender.info.version}

    @api.post("/recommend", response_model=RecommendResponse, openapi_extra=RECOMMEND_OPENAPI)
    async def recommend(request: Request):
        recommender.authorize(request.headers.get("authorization"))
        body = await read_body(request.stream(), request.headers.get("content-length"), settings.max_body_bytes,
                               settings.body_timeout_s)
        scoring = recommender.parse(body, request.headers.get("content-type"))
        async with lock:
            response = recommender.score([scoring])[0]
        return SafeJSONResponse(response.model_dump(mode="json"))

    return api
