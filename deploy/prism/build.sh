#!/usr/bin/env bash
# Build Beam's Prism runner at a Beam version with the patches of this folder applied.
#
#   deploy/prism/build.sh OUT [BEAM_VERSION]     # e.g. deploy/prism/build.sh .cache/bin/prism 2.77.0
#
# stage-select-spin.patch: Prism's bundle loop (internal/stage.go, stage.Execute) selects on
# the bundle's data channel after it was closed, so from the moment a bundle's outputs are all
# in until the SDK's response arrives -- for the whole bundle when a stage has no outputs --
# it spins a core (runtime.selectgo in perf). On the 2-core machine that core is taken from
# the job and the extraction workers. Measured: docs/performance.md, "Where the CPU outside
# extraction goes". The patch sets the channel to nil once it has fired, as Go's idiom is.
#
# The module comes from the Go module cache (or the Go module proxy); the build is offline
# when the cache holds it. BEAM_VERSION defaults to the installed apache_beam's.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: build.sh OUT [BEAM_VERSION]}"
version="${2:-$("${PYTHON:-python3}" -c 'import apache_beam; print(apache_beam.__version__)')}"
module="github.com/apache/beam/sdks/v2"
command -v go >/dev/null 2>&1 || { echo "go not found: Go is needed to build Prism" >&2; exit 1; }
src="$(go mod download -json "$module@v$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -d "$src" ] || { echo "could not download $module@v$version" >&2; exit 1; }
work="$(mktemp -d)"
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$src" "$work/sdks"
chmod -R u+w "$work/sdks"
for p in "$here"/*.patch; do
  patch -d "$work/sdks" -p1 --forward --silent < "$p"
done
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
(cd "$work/sdks" && GOFLAGS=-mod=mod go build -o "$out" ./go/cmd/prism)
echo "prism $version + $(cd "$here" && ls *.patch | tr '\n' ' ')-> $out"
