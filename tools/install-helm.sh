#!/usr/bin/env bash
# Puts helm (the version below) in the tools cache, built from source through the Go module
# proxy: the only place this project's machines can get it from. Idempotent: a cached binary
# built from the same module version is kept, so only the first run pays the build (a few
# minutes on two cores). Prints the binary's path.
#
#   POSTBACK_TOOLS_BIN  where tools are cached (default ~/.cache/postback-pipeline/bin)
set -euo pipefail

HELM_MODULE=helm.sh/helm/v3
HELM_VERSION=v3.22.0
BIN_DIR=${POSTBACK_TOOLS_BIN:-$HOME/.cache/postback-pipeline/bin}
HELM=$BIN_DIR/helm

# What helm's own Makefile stamps in with -X: its version, and the Kubernetes version of the
# k8s.io modules it is built with (v0.37 for helm v3.22.0), which `helm template` and `helm
# lint` assume without --kube-version. A plain `go install` would leave "v3.22" and 1.20.
K8S_MINOR=37
LDFLAGS="-X $HELM_MODULE/internal/version.version=$HELM_VERSION"
for package in pkg/chartutil pkg/lint/rules; do
    LDFLAGS+=" -X $HELM_MODULE/$package.k8sVersionMajor=1 -X $HELM_MODULE/$package.k8sVersionMinor=$K8S_MINOR"
done

built_version() {
    "$HELM" version --template '{{.Version}}' 2>/dev/null || true
}

if [[ -x $HELM && $(built_version) == "$HELM_VERSION" ]]; then
    echo "$HELM"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "install-helm: 'go' is not on the PATH; helm $HELM_VERSION is built with Go" >&2
    exit 1
fi

mkdir -p "$BIN_DIR"
echo "install-helm: building helm $HELM_VERSION into $BIN_DIR (first time only)" >&2
GOBIN=$BIN_DIR GOFLAGS=-trimpath go install -ldflags "$LDFLAGS" "$HELM_MODULE/cmd/helm@$HELM_VERSION"
if [[ $(built_version) != "$HELM_VERSION" ]]; then
    echo "install-helm: $HELM is not helm $HELM_VERSION after the build" >&2
    exit 1
fi
echo "$HELM"
