#!/usr/bin/env bash
# Copy the WASM build of onnxruntime-web that the page's in-browser reconstruction needs into
# static/vendor/onnxruntime-web/ (no CDN, no bundler): the ES module, its loader and its one
# WebAssembly binary (SIMD and threads; threads only where the page is cross-origin isolated).
# The WebGPU builds (ort-wasm-simd-threaded.jsep/asyncify.wasm, 28-30 MB each, 7 MB gzipped) are
# left out: see docs/browser.md.
#   bash src/facevox/web/vendor_onnxruntime.sh [VERSION]      # default: the version vendored now
# Needs npm (it only downloads the package tarball). Commit the result.
set -euo pipefail
VERSION="${1:-1.31.1}"
HERE="$(cd "$(dirname "$0")" && pwd)"
DEST="$HERE/static/vendor/onnxruntime-web"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --silent "onnxruntime-web@$VERSION" >/dev/null && tar xzf onnxruntime-web-*.tgz)
SRC="$TMP/package/dist"
rm -rf "$DEST"
mkdir -p "$DEST"
cp "$SRC/ort.wasm.min.mjs" "$SRC/ort-wasm-simd-threaded.mjs" "$SRC/ort-wasm-simd-threaded.wasm" "$DEST/"
# the package ships no LICENSE file; its files carry this header
printf 'ONNX Runtime Web %s\nCopyright (c) Microsoft Corporation. All rights reserved.\nLicensed under the MIT License (https://github.com/microsoft/onnxruntime/blob/main/LICENSE).\n' "$VERSION" > "$DEST/LICENSE"
echo "$VERSION" > "$DEST/VERSION"
echo "onnxruntime-web $VERSION → $DEST"
