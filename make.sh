#!/bin/sh
# Bootstrap for a fresh Debian machine: install `make` if it is missing, then run the Makefile.
#   ./make.sh run     the node with its mount, on ~/kachery-storage
#   ./make.sh test    the whole test suite
set -eu
cd "$(dirname "$0")"
if ! command -v make >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq make
fi
exec make "$@"
