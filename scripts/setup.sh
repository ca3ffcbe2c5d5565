#!/usr/bin/env bash
# One-shot setup for a fresh Debian / Raspberry Pi OS machine (Python 3.11+).
# Installs mosquitto and python3-venv with apt when they are missing (needs root
# or sudo), creates ./.venv and installs this project into it (editable).
# Safe to run again: it only does what is still missing.
#
#   EXTRAS   pip extras to install (default: sim,cloud,test)
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${EXTRAS:-sim,cloud,test}"
python="${PYTHON:-python3}"

say() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else say "need root for: $*"; exit 1
    fi
}

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    say "Python 3.11 or newer is required ($python is $("$python" --version 2>&1))"
    exit 1
fi

# What comes from Debian rather than PyPI: the broker the tests and the demo
# start, the tools the tests drive, the browser that prints the nap sheet and
# opens the pages in tests, and the Japanese font charts and sheets are drawn in.
apt_want=(mosquitto postgresql mtools dosfstools fusefat chromium fonts-noto-cjk)
apt_pkgs=()
for pkg in "${apt_want[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || apt_pkgs+=("$pkg")
done
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    apt_pkgs+=("python3-venv")
fi
if ((${#apt_pkgs[@]})); then
    say "installing with apt: ${apt_pkgs[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
    say "creating .venv"
    "$python" -m venv .venv
fi
# Reinstall only when pyproject.toml changed since the last install.
stamp=.venv/.satoyama-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    say "installing satoyama-edge[$extras] into .venv"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e ".[$extras]"
    printf '%s' "$want" > "$stamp"
fi
say "ready"
