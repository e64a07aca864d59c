"""Online recommendation for an exported student, in three modules:

- `service`: the framework-free endpoint (settings, request/response models, body parsing, Catalogue,
  score_batch, Recommender, auth, JSON error handlers, bare_fastapi_app); no Ray.
- `app`: the Ray Serve deployment (`RecommenderDeployment`, `build_app`, and `app_builder`, the Serve config's
  import_path `rdistill.serving.app:app_builder`); the only module here that imports Ray when imported.
- `local`: `run_local` (`rdistill serve`) and `serve_until_interrupted`; Ray is imported inside them.

Importing this package imports neither Ray nor the top-level `serve` package (tests/test_imports.py): the names
below are service's and local's. Import the Serve application from rdistill.serving.app.
"""

from rdistill.serving.local import run_local, serve_until_interrupted
from rdistill.serving.service import (
    DEFAULT_TOKEN_ENV,
    MAX_K,
    RECOMMEND_OPENAPI,
    Catalogue,
    ErrorResponse,
    ModelDetails,
    ModelInfo,
    RecommendedItem,
    Recommender,
    RecommendRequest,
    RecommendResponse,
    ScoringRequest,
    ServeSettings,
    ServingError,
    add_error_handlers,
    bare_fastapi_app,
    check_batching,
    check_content_length,
    describe_validation_error,
    error_body,
    is_authorized,
    parse_recommend_body,
    read_body,
    read_token,
    score_batch,
)

__all__ = [
    "DEFAULT_TOKEN_ENV", "MAX_K", "RECOMMEND_OPENAPI", "Catalogue", "ErrorResponse", "ModelDetails", "ModelInfo",
    "RecommendedItem", "Recommender", "RecommendRequest", "RecommendResponse", "ScoringRequest", "ServeSettings",
    "ServingError", "add_error_handlers", "bare_fastapi_app", "check_batching", "check_content_length",
    "describe_validation_error", "error_body", "is_authorized", "parse_recommend_body", "read_body", "read_token",
    "run_local", "score_batch", "serve_until_interrupted",
]
