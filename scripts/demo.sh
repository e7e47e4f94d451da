#!/usr/bin/env bash
# Install napari-calc into ./.venv and run the main job on the built-in sample.
# Usage: scripts/demo.sh [--out DIR]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup-env.sh"
make_venv
"$VENV/bin/python" -m pip install -q "$ROOT"
exec "$VENV/bin/napari-calc" demo "$@"
