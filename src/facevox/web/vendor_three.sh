#!/usr/bin/env bash
# Copy the few three.js files the web page imports into static/vendor/three/ (no CDN, no bundler).
#   bash src/facevox/web/vendor_three.sh [VERSION]      # default: the version vendored now
# Needs npm (it only downloads the package tarball). Commit the result.
set -euo pipefail
VERSION="${1:-0.187.0}"
HERE="$(cd "$(dirname "$0")" && pwd)"
DEST="$HERE/static/vendor/three"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --silent "three@$VERSION" >/dev/null && tar xzf three-*.tgz)
SRC="$TMP/package"
FILES=(
  LICENSE
  build/three.module.js
  build/three.core.js
  examples/jsm/controls/OrbitControls.js
  examples/jsm/loaders/GLTFLoader.js
  examples/jsm/utils/BufferGeometryUtils.js
  examples/jsm/utils/SkeletonUtils.js
)
rm -rf "$DEST"
for f in "${FILES[@]}"; do
  mkdir -p "$DEST/$(dirname "$f")"
  cp "$SRC/$f" "$DEST/$f"
done
echo "$VERSION" > "$DEST/VERSION"
echo "three $VERSION → $DEST"
