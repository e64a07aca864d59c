"""The Ray Serve application (serve/app.py) and its Serve config YAML (serve/config.yaml); see serve/README.md."""
