#!/usr/bin/env bash
# Copy the few files the web page imports from an npm package into static/vendor/NAME/ (no CDN, no
# bundler), with its licence and a VERSION file. Needs npm (it only downloads the package tarball).
# Commit the result.
#   bash src/facevox/web/vendor.sh three [VERSION]             # three.js: the page's 3D view
#   bash src/facevox/web/vendor.sh model-viewer [VERSION]      # <model-viewer>'s module build; the page's
#                                                              # import map points its one import, "three", at three.js
#   bash src/facevox/web/vendor.sh onnxruntime-web [VERSION]   # the in-browser reconstruction's runtime
# onnxruntime-web: the WASM build only (the ES module, its loader and its one WebAssembly binary, SIMD
# and threads; threads only where the page is cross-origin isolated). The WebGPU builds
# (ort-wasm-simd-threaded.jsep/asyncify.wasm, 28-30 MB each, 7 MB gzipped) are left out: see docs/browser.md.
# Without VERSION, the version vendored now.
set -euo pipefail
NAME="$1"
case "$NAME" in
  three) PACKAGE=three; VERSION="${2:-0.187.0}"
    FILES=(LICENSE build/three.module.js build/three.core.js examples/jsm/controls/OrbitControls.js
           examples/jsm/loaders/GLTFLoader.js examples/jsm/utils/BufferGeometryUtils.js examples/jsm/utils/SkeletonUtils.js) ;;
  model-viewer) PACKAGE=@google/model-viewer; VERSION="${2:-4.4.0}"
    FILES=(LICENSE dist/model-viewer-module.min.js) ;;
  onnxruntime-web) PACKAGE=onnxruntime-web; VERSION="${2:-1.31.1}"
    FILES=(dist/ort.wasm.min.mjs dist/ort-wasm-simd-threaded.mjs dist/ort-wasm-simd-threaded.wasm) ;;
  *) echo "usage: vendor.sh three|model-viewer|onnxruntime-web [VERSION]" >&2; exit 2 ;;
esac
DEST="$(cd "$(dirname "$0")" && pwd)/static/vendor/$NAME"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null && tar xzf ./*.tgz)
rm -rf "$DEST"
for f in "${FILES[@]}"; do
  # three keeps its folder layout (its modules import each other by relative path); the others are flat
  target="$DEST/$([ "$NAME" = three ] && echo "$f" || basename "$f")"
  mkdir -p "$(dirname "$target")"
  cp "$TMP/package/$f" "$target"
done
if [ "$NAME" = onnxruntime-web ]; then  # the package ships no LICENSE file; its files carry this header
  printf 'ONNX Runtime Web %s\nCopyright (c) Microsoft Corporation. All rights reserved.\nLicensed under the MIT License (https://github.com/microsoft/onnxruntime/blob/main/LICENSE).\n' "$VERSION" > "$DEST/LICENSE"
fi
echo "$VERSION" > "$DEST/VERSION"
echo "$PACKAGE $VERSION → $DEST"
