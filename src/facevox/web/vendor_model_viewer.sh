#!/usr/bin/env bash
# Copy <model-viewer>'s module build into static/vendor/model-viewer/ (no CDN, no bundler); the page's
# import map points its one import, "three", at the vendored three.js.
#   bash src/facevox/web/vendor_model_viewer.sh [VERSION]      # default: the version vendored now
# Needs npm (it only downloads the package tarball). Commit the result.
set -euo pipefail
VERSION="${1:-4.4.0}"
HERE="$(cd "$(dirname "$0")" && pwd)"
DEST="$HERE/static/vendor/model-viewer"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --silent "@google/model-viewer@$VERSION" >/dev/null && tar xzf google-model-viewer-*.tgz)
rm -rf "$DEST"
mkdir -p "$DEST"
cp "$TMP/package/LICENSE" "$TMP/package/dist/model-viewer-module.min.js" "$DEST/"
echo "$VERSION" > "$DEST/VERSION"
echo "model-viewer $VERSION → $DEST"
