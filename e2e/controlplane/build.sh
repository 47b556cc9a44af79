#!/usr/bin/env bash
# Builds the upstream binaries the local control plane runs (kube-apiserver,
# kube-controller-manager, kube-scheduler, kube-proxy, kubectl, kubelet, etcd, kwok, helm)
# from the Go build lists beside this script, into a cache outside the repo:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/understudy/<toolchain-id>/bin
# <toolchain-id> hashes the pinned go.mod/go.sum files, the Go version and
# $recipe, so a pin change gives a new directory and an unchanged pin rebuilds
# nothing. actionlint, a lint tool rather than part of the cluster, has a
# directory of its own keyed the same way by its own module, so that a bump of
# it never sends the whole toolchain into a cold rebuild.
#
# Usage: build.sh                      build what is missing, print the bin directory last
#        build.sh --print-dir          print the bin directory only (no build)
#        build.sh --actionlint         build actionlint only if missing, print its path
#        build.sh --print-actionlint   print actionlint's path only (no build)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
k8s_version="v1.37.2"
# Bump when the build flags or the copied files below change.
recipe=1
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/understudy"

if ! command -v go >/dev/null 2>&1; then
  echo "error: the Go toolchain (go) is not on PATH; install Go >= 1.26 to build the control plane" >&2
  exit 1
fi

# The modules whose pins name the cluster's bin directory, listed rather than
# globbed so a new module directory beside them (actionlint) does not change it;
# the order is the glob's, which keeps existing caches valid.
cluster_modules=(etcd helm kubernetes kwok)
# module_id <module dir>...: hash of those modules' pins, the Go version and $recipe.
module_id() {
  local module mods=() sums=()
  for module in "$@"; do
    mods+=("$module/go.mod")
    sums+=("$module/go.sum")
  done
  (cd "$here" && echo "recipe=$recipe" && cat "${mods[@]}" "${sums[@]}" && go version) | sha256sum | cut -c1-12
}
bin_dir="$cache_root/k8s-$k8s_version-$(module_id "${cluster_modules[@]}")/bin"
actionlint_version="v1.7.12"
actionlint_dir="$cache_root/actionlint-$actionlint_version-$(module_id actionlint)/bin"

case "${1:-}" in
  --print-dir)
    echo "$bin_dir"
    exit 0
    ;;
  --print-actionlint)
    echo "$actionlint_dir/actionlint"
    exit 0
    ;;
esac
export CGO_ENABLED=0
# Build exactly the committed pins with the machine's Go: -mod=readonly fails
# instead of editing go.mod, and every module is verified against the
# committed go.sum, so the checksum database is never needed.
export GOFLAGS="-mod=readonly -trimpath"
export GOTOOLCHAIN=local

build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=37"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

# build <bin dir> <module dir> <ldflags> <binary name>=<package> ...
build() {
  local bin_dir="$1" module="$2" ldflags="$3"
  shift 3
  mkdir -p "$bin_dir"
  local missing=() pkgs=()
  for spec in "$@"; do
    local name="${spec%%=*}" pkg="${spec#*=}"
    if [[ ! -x "$bin_dir/$name" ]]; then
      missing+=("$name")
      pkgs+=("$pkg")
    fi
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    echo "toolchain: $module up to date"
    return
  fi
  echo "toolchain: building ${missing[*]} (module $module; a cold build takes minutes)"
  local start=$SECONDS tmp
  tmp="$(mktemp -d "$bin_dir/.build.XXXXXX")"
  (cd "$here/$module" && go build -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
  # go names each binary after its package's last path element, skipping a
  # major-version suffix (go.etcd.io/etcd/server/v3 -> server).
  for i in "${!missing[@]}"; do
    local base
    base="$(basename "${pkgs[$i]}")"
    [[ "$base" =~ ^v[0-9]+$ ]] && base="$(basename "$(dirname "${pkgs[$i]}")")"
    mv "$tmp/$base" "$bin_dir/${missing[$i]}"
  done
  rm -rf "$tmp"
  echo "toolchain: built ${missing[*]} in $((SECONDS - start))s"
}

actionlint_ldflags="-s -w -X github.com/rhysd/actionlint.version=$actionlint_version"
if [[ "${1:-}" == "--actionlint" ]]; then
  build "$actionlint_dir" actionlint "$actionlint_ldflags" actionlint=github.com/rhysd/actionlint/cmd/actionlint >&2
  echo "$actionlint_dir/actionlint"
  exit 0
fi

build "$bin_dir" kubernetes "$k8s_ldflags" \
  kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
  kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
  kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler \
  kube-proxy=k8s.io/kubernetes/cmd/kube-proxy \
  kubectl=k8s.io/kubernetes/cmd/kubectl \
  kubelet=k8s.io/kubernetes/cmd/kubelet
build "$bin_dir" etcd "-s -w" etcd=go.etcd.io/etcd/server/v3
build "$bin_dir" kwok "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=0.8.0" kwok=sigs.k8s.io/kwok/cmd/kwok
build "$bin_dir" helm "-s -w -X helm.sh/helm/v4/internal/version.version=v4.3.1" helm=helm.sh/helm/v4/cmd/helm

# kwok >= v0.8 ships no stages built in: copy the node and pod lifecycle stages
# from the pinned module so the harness can pass them with --config.
stage_dir="$bin_dir/../kwok-stages"
if [[ ! -d "$stage_dir" ]]; then
  kwok_src="$(cd "$here/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
  mkdir -p "$stage_dir.tmp"
  cp "$kwok_src"/kustomize/stage/node/fast/node-initialize.yaml \
     "$kwok_src"/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
     "$kwok_src"/kustomize/stage/pod/fast/*.yaml \
     "$stage_dir.tmp/"
  chmod u+w "$stage_dir.tmp"/*.yaml
  mv "$stage_dir.tmp" "$stage_dir"
fi

build "$actionlint_dir" actionlint "$actionlint_ldflags" actionlint=github.com/rhysd/actionlint/cmd/actionlint

echo "$bin_dir"
