"""The Ray Serve config YAML (serve/config.yaml) and a shim for the old import path `serve.app:app_builder`; the
application itself is rdistill/serving/app.py. See serve/README.md."""
