#!/usr/bin/env bash
# Build rdistill's images: the wheel first (dist/), then the CPU and GPU images from the repository root.
#   cluster/docker/build.sh [IMAGE_PREFIX] [TAG]     e.g. cluster/docker/build.sh ghcr.io/acme/rdistill 0.1.0
# Uses docker when present, else podman. Push the images to a registry your cluster pulls from and put their names
# in cluster/kuberay/*.yaml.
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix="${1:-rdistill}"
tag="${2:-$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')}"
engine="$(command -v docker || command -v podman || true)"
[ -n "$engine" ] || { echo "build.sh: neither docker nor podman found" >&2; exit 1; }
rm -rf dist
python3 -m pip wheel --no-deps --wheel-dir dist .
for flavour in cpu gpu; do
    "$engine" build -f "cluster/docker/Dockerfile.$flavour" --build-arg "RDISTILL_VERSION=$tag" \
        -t "$prefix:$tag-$flavour" .
done
echo "built $prefix:$tag-cpu and $prefix:$tag-gpu"
