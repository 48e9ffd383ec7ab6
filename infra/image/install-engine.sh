#!/usr/bin/env bash
# What `make image` needs where no docker daemon answers, from Debian's packages (as root):
# podman (it builds too: buildah's code is inside), runc (crun refuses a hybrid cgroup
# hierarchy), netavark (podman's network backend, even for --network host), iptables (what
# netavark writes a published port's rules with: `-p 9000:8080` fails without it) and debootstrap
# (the stand-in base image where no registry answers). Installs only what is missing.
set -euo pipefail
packages=(podman runc netavark aardvark-dns iptables uidmap debootstrap)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "as root: apt-get install ${missing[*]}" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
