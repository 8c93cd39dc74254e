#!/usr/bin/env bash
# The main job on the bundled sample: `vs-vgan demo`, twice its frame rate through vspipe
# (creating or reusing .venv first). Extra arguments go to it (try --help).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
exec "$PY" -m vs_vgan demo "$@"
