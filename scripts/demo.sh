#!/usr/bin/env bash
# The main job on the bundled sample: twice its frame rate through vspipe (creating or
# reusing .venv first). Extra arguments go to scripts/demo.py (try --help).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
exec "$PY" scripts/demo.py "$@"
