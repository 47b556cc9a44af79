#!/usr/bin/env bash
# `make kind-e2e`: the e2e suite (`make e2e`) against a kind cluster made from
# e2e/kind.yaml, with the components' image built from the Dockerfile and
# loaded into its nodes. The cluster is deleted at the end, whatever the
# suite's result, and the suite's exit status is kept.
#
# Needs kind (v0.33.0: the node image in e2e/kind.yaml is built for it) and a
# container engine that answers: docker, or podman (then kind runs with
# KIND_EXPERIMENTAL_PROVIDER=podman). Without them it says what is missing in
# one line and fails.
#
# Environment: KIND_E2E_CLUSTER (default understudy-e2e) names the cluster;
# KIND_E2E_KEEP=1 keeps it afterwards, for looking around.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cluster="${KIND_E2E_CLUSTER:-understudy-e2e}"
kind_version="v0.33.0"
image="localhost/understudy:dev"
kubeconfig="$root/target/kind-kubeconfig"

# A docker CLI with no daemon behind it is not an engine: ask each to answer.
engine=""
engine_note=""
for candidate in docker podman; do
  command -v "$candidate" >/dev/null 2>&1 || continue
  if timeout 30 "$candidate" info >/dev/null 2>&1; then
    engine="$candidate"
    break
  fi
  engine_note+="${engine_note:+, }$candidate is on PATH but \`$candidate info\` fails"
done
have_kind=""
command -v kind >/dev/null 2>&1 && have_kind=yes

if [[ -z "$have_kind" || -z "$engine" ]]; then
  if [[ -z "$have_kind" && -z "$engine" ]]; then
    missing="kind and a container engine (docker or podman); none found on this machine"
  elif [[ -z "$have_kind" ]]; then
    missing="kind (go install sigs.k8s.io/kind@$kind_version); found the engine $engine"
  else
    missing="a container engine (docker or podman); found kind but no engine"
  fi
  echo "make kind-e2e: needs $missing${engine_note:+ ($engine_note)}" >&2
  exit 1
fi

if [[ "$engine" == podman ]]; then
  export KIND_EXPERIMENTAL_PROVIDER="${KIND_EXPERIMENTAL_PROVIDER:-podman}"
fi
kind_reported="$(kind version)"
if [[ "$kind_reported" != "kind $kind_version "* ]]; then
  echo "kind-e2e: warning: $kind_reported is not $kind_version, which e2e/kind.yaml's node image is built for" >&2
fi

cleanup() {
  local status=$?
  if [[ "${KIND_E2E_KEEP:-}" == 1 ]]; then
    echo "kind-e2e: keeping cluster $cluster (KUBECONFIG=$kubeconfig); kind delete cluster --name $cluster removes it"
  else
    echo "kind-e2e: deleting cluster $cluster"
    kind delete cluster --name "$cluster" || true
  fi
  exit "$status"
}

mkdir -p "$root/target"
# Set before create, so a create that fails half-way is removed too.
trap cleanup EXIT
if grep -qx "$cluster" <<<"$(kind get clusters 2>/dev/null || true)"; then
  echo "kind-e2e: reusing cluster $cluster"
else
  kind create cluster --name "$cluster" --config "$root/e2e/kind.yaml" \
    --kubeconfig "$kubeconfig" --wait 5m
fi
# Its own kubeconfig file: the user's ~/.kube/config is never touched.
kind get kubeconfig --name "$cluster" >"$kubeconfig"

# The chart's default image (image.repository:appVersion, IfNotPresent) is
# tagged on the same build, so the chart runs it with its default values too.
chart_repository="$(sed -n 's/^  repository: *//p' "$root/charts/understudy/values.yaml")"
app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$root/charts/understudy/Chart.yaml")"
chart_image="$chart_repository:$app_version"

echo "kind-e2e: building $image with $engine"
"$engine" build -t "$image" -t "$chart_image" "$root"
if [[ "$engine" == docker ]]; then
  kind load docker-image "$image" "$chart_image" --name "$cluster"
else
  # kind's docker-image loader calls the docker CLI; an archive works for any engine.
  archive="$root/target/kind-images.tar"
  "$engine" save --multi-image-archive -o "$archive" "$image" "$chart_image"
  kind load image-archive "$archive" --name "$cluster"
  rm -f "$archive"
fi

# Run by `make e2e` once the chart is Ready: kube-controller-manager without the controllers
# understudy-controllers replaces (the lab's list, understudies::controller_manager_controllers).
# kubeadm's manifest has `--controllers=*,bootstrapsigner,tokencleaner`; kubelet restarts the
# static pod when the file changes, and the wait is for the new process's flags.
node="$cluster-control-plane"
off="-deployment-controller,-replicaset-controller,-endpoints-controller,-endpointslice-controller"
manifest=/etc/kubernetes/manifests/kube-controller-manager.yaml
handover="$engine exec $node sed -i 's/--controllers=\*,/--controllers=*,$off,/' $manifest"
handover+=" && timeout 180 sh -c 'until $engine exec $node pgrep -af kube-controller-manager | grep -q -- -deployment-controller; do sleep 2; done'"

# kube-proxy is off (kind.yaml): nothing programs the `kubernetes` Service before
# understudy-proxy does, so the proxy itself reaches the apiserver at the control-plane
# node's address (a SAN of kubeadm's serving certificate), as kubeadm's kube-proxy does.
apiserver_ip="$("$engine" inspect --format '{{ .NetworkSettings.Networks.kind.IPAddress }}' "$node")"
proxy_values="$root/target/kind-proxy-values.yaml"
printf 'proxy:\n  k8sServiceHost: "%s"\n  k8sServicePort: "6443"\n' "$apiserver_ip" >"$proxy_values"

KUBECONFIG="$kubeconfig" "${MAKE:-make}" -C "$root" e2e E2E_HANDOVER="$handover" IMAGE="$image" IMAGE_PULL_POLICY=Never \
  CHART_VALUES="$proxy_values"
