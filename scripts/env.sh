# Source me: creates or reuses the project's virtual environment and installs what it needs.
#   VS_VGAN_VENV  where the environment lives (default: .venv at the repository root)
# Sets PY (the environment's python) and ROOT. Needs Python 3.12+ (VapourSynth R74+ wheels).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VS_VGAN_VENV:-$ROOT/.venv}

find_python() {
  local c
  for c in python3 python3.13 python3.12 python; do
    if command -v "$c" >/dev/null 2>&1 &&
       (cd "$ROOT" && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))') 2>/dev/null; then
      (cd "$ROOT" && "$c" -c 'import sys; print(sys.executable)')
      return 0
    fi
  done
  echo "vs_vgan: Python 3.12 or newer is needed (VapourSynth wheels exist only for 3.12+)." >&2
  echo "  with pyenv: pyenv install 3.12 (the repository's .python-version selects it)" >&2
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  base=$(find_python)
  echo "vs_vgan: creating $VENV with $base" >&2
  "$base" -m venv "$VENV"
fi
PY="$VENV/bin/python"

# Reinstall only when the packaging (pyproject.toml, setup.py) changed since the last install here.
stamp="$VENV/.vs_vgan-setup-$(cat "$ROOT/pyproject.toml" "$ROOT/setup.py" | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  echo "vs_vgan: installing vs_vgan and its dependencies into $VENV (torch is large: a few minutes)" >&2
  "$PY" -m pip install -q --upgrade pip >&2
  "$PY" -m pip install -q -e "$ROOT[test]" >&2
  rm -f "$VENV"/.vs_vgan-setup-*
  touch "$stamp"
fi
# vspipe finds its Python through a per-user config file: point it at this environment.
"$VENV/bin/vapoursynth" config >/dev/null
export PATH="$VENV/bin:$PATH"
