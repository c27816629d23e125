#!/bin/sh
# Build the local base image that `make image` uses where no image registry is reachable: Debian
# bookworm (debootstrap, variant minbase) with python3 and python3-venv, imported into buildah's storage
# as $1 (default localhost/modelport-base:bookworm). The result plays the part of python:3.11-slim:
# bookworm's python3 is 3.11 too, at /usr/bin instead of /usr/local/bin (the Containerfile uses
# `python3 -m venv`, so either works). An image already in the storage is reused: a second `make image`
# does not debootstrap again (`buildah rmi` it to rebuild, e.g. for security updates).
#
# Environment: BUILDAH (default "buildah --storage-driver vfs"), DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR.
set -eu

image=${1:-localhost/modelport-base:bookworm}
buildah=${BUILDAH:-buildah --storage-driver vfs}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

if $buildah inspect --type image "$image" >/dev/null 2>&1; then
	echo "base image $image: cached (buildah rmi it to rebuild)"
	exit 0
fi
[ "$(id -u)" = 0 ] || { echo "base.sh: debootstrap needs root (or pass BASE=python:3.11-slim-bookworm)" >&2; exit 1; }

container=$($buildah from --name modelport-base-build scratch)
cleanup() {
	$buildah umount "$container" >/dev/null 2>&1 || true
	$buildah rm "$container" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM
root=$($buildah mount "$container")

# minbase: Essential packages and apt only. passwd brings useradd for the Containerfile's user;
# ca-certificates lets the server reach S3 and PostgreSQL over TLS.
debootstrap --variant=minbase --include=python3,python3-venv,passwd,ca-certificates \
	bookworm "$root" "$mirror"

# The same suites as Docker's debian:bookworm image, so security fixes published since the release
# are applied now (debootstrap itself reads only the release suite).
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
SOURCES
chroot "$root" apt-get update -q
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Options::=--force-confold upgrade
chroot "$root" apt-get clean
# What an image never needs: package lists (apt-get update fetches them), caches, documentation,
# translations beyond English.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log \
	"$root"/var/cache/debconf/*-old "$root"/usr/share/doc/* "$root"/usr/share/man/* \
	"$root"/usr/share/info/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'en*' ! -name locale.alias \
	-exec rm -rf {} + 2>/dev/null || true

$buildah umount "$container" >/dev/null
$buildah config --os linux --arch "$(dpkg --print-architecture)" \
	--env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
	--cmd /bin/bash --label org.opencontainers.image.description="Debian bookworm minbase + python3 (modelport's local base)" \
	"$container"
$buildah commit --quiet --rm "$container" "$image" >/dev/null
trap - EXIT INT TERM
echo "base image $image: built"
$buildah images "$image"
