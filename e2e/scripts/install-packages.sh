#!/usr/bin/env bash
# Installs the Debian packages the lab and the proxy's data-path tests need,
# only when something is missing (so a warm machine makes no apt calls).
# containerd, runc and the CNI plugins run the lab's real nodes (with the
# kubelet that `make toolchain` builds). shellcheck: actionlint checks the workflows' scripts with it.
set -euo pipefail

packages=(iptables nftables iproute2 conntrack ipset ipvsadm kmod curl ca-certificates
  containerd runc containernetworking-plugins util-linux mount shellcheck)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "packages: all present"
  exit 0
fi
echo "packages: installing ${missing[*]}"
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
