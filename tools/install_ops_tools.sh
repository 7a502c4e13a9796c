#!/usr/bin/env bash
# Builds helm, promtool and buf from the Go module proxy into .tools/bin (GitHub release downloads are not
# reachable from CI/dev machines here, proxy.golang.org is). Idempotent: a binary already built from the
# pinned version is kept (a stamp beside it names the version), so a rerun costs nothing; a changed pin
# rebuilds. A clean build takes minutes (promtool most of them: Prometheus' service-discovery SDKs).
# Names as arguments build only those (`tools/install_ops_tools.sh buf`: make proto-compat); none, all three.
# SKIP_PROMTOOL=1 skips promtool.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.19.5}"
# Prometheus' Go module versions are v0.<major*100+minor>.<patch>: v0.309.1 is Prometheus v3.9.1.
PROMTOOL_VERSION="${PROMTOOL_VERSION:-v0.309.1}"
# buf: `buf breaking` against the released proto image (make proto-compat, proto/compat/).
BUF_VERSION="${BUF_VERSION:-v1.75.0}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# OPS_TOOLS_DIR: another cache folder (a clean-machine timing, a CI cache path).
TOOLS="${OPS_TOOLS_DIR:-$ROOT/.tools}"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

export GOBIN="$TOOLS/bin"
export GOMODCACHE="$TOOLS/gomod"
export GOCACHE="$TOOLS/gocache"
export GOFLAGS="-buildvcs=false -modcacherw"
export GOTOOLCHAIN=local
mkdir -p "$GOBIN"
built=0
WANTED=" ${*:-helm promtool buf} "
[[ "${SKIP_PROMTOOL:-0}" == "1" ]] && WANTED="${WANTED/ promtool / }"
wanted() { [[ "$WANTED" == *" $1 "* ]]; }

# A stamp per tool records the version it was built from, so changing a pin rebuilds it.
cached() { # name version
  [[ -x "$GOBIN/$1" && -f "$GOBIN/.$1.version" && "$(cat "$GOBIN/.$1.version")" == "$2" ]]
}

if ! wanted helm; then
  :
elif cached helm "$HELM_VERSION"; then
  echo "helm $HELM_VERSION: cached in $GOBIN"
else
  echo "building helm $HELM_VERSION from the Go module proxy..."
  # What helm's own Makefile sets: its version, and the Kubernetes version `helm template` and `helm lint`
  # assume (else v1.20, older than the gRPC probes the chart uses); 1.34 matches helm 3.19's client-go.
  "$GO" install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=34 \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=34" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  echo "$HELM_VERSION" >"$GOBIN/.helm.version"
  built=1
fi

if ! wanted promtool; then
  :
elif cached promtool "$PROMTOOL_VERSION"; then
  echo "promtool $PROMTOOL_VERSION: cached in $GOBIN"
else
  echo "building promtool $PROMTOOL_VERSION from the Go module proxy..."
  # `go install pkg@version` refuses Prometheus (its go.mod has exclude directives), so build it from a
  # scratch module that requires it.
  src="$TOOLS/src/promtool"
  rm -rf "$src" && mkdir -p "$src"
  (
    cd "$src"
    "$GO" mod init llmrec.local/ops-tools >/dev/null 2>&1
    "$GO" get "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION"
    "$GO" build -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMTOOL_VERSION" \
      -o "$GOBIN/promtool" github.com/prometheus/prometheus/cmd/promtool
  )
  echo "$PROMTOOL_VERSION" >"$GOBIN/.promtool.version"
  built=1
fi

if ! wanted buf; then
  :
elif cached buf "$BUF_VERSION"; then
  echo "buf $BUF_VERSION: cached in $GOBIN"
else
  echo "building buf $BUF_VERSION from the Go module proxy..."
  "$GO" install -ldflags "-s -w" "github.com/bufbuild/buf/cmd/buf@$BUF_VERSION"
  echo "$BUF_VERSION" >"$GOBIN/.buf.version"
  built=1
fi

# The module and build caches take about 3.5 GB and only serve a rebuild (a changed pin); the binaries and
# their stamps are all later runs need. OPS_TOOLS_KEEP_CACHE=1 keeps them.
if [[ "$built" == "1" && "${OPS_TOOLS_KEEP_CACHE:-0}" != "1" ]]; then
  "$GO" clean -cache -modcache
  rm -rf "$TOOLS/src" "$GOCACHE" "$GOMODCACHE"
fi
