"""Compatibility shim: the Ray Serve application now lives in rdistill/serving/app.py.

Kept so that `serve run serve.app:app_builder` and Serve configs written before the move keep working; new
configs name `rdistill.serving.app:app_builder` (serve/config.yaml). Nothing under rdistill/ imports this.
"""

from rdistill.serving.app import (  # noqa: F401 - re-exported for import_path users
    DEFAULT_MAX_ONGOING_REQUESTS,
    DEPLOYMENT_NAME,
    RecommenderDeployment,
    api,
    app_builder,
    build_app,
)
