#!/usr/bin/env bash
# Run the test suite (creating or reusing .venv first). Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
exec "$PY" -m pytest -q tests "$@"
