#!/usr/bin/env bash
# One-shot setup for a fresh Debian / Raspberry Pi OS machine (Python 3.11+).
# Installs what the role needs with apt when it is missing (needs root or sudo),
# creates ./.venv and installs this project into it.
# Safe to run again: it only does what is still missing.
#
#   bash scripts/setup.sh [ROLE]
#
#   dev        (default) the developer's machine: everything the tests and the demo
#              start (mosquitto, PostgreSQL, mtools, chromium, Noto CJK fonts, QEMU) and
#              the sim, cloud and test extras; editable install.
#   device     a Raspberry Pi that runs the daemon from this checkout: the daemon and
#              the pi extra (lgpio, gpiozero's pin backend). No broker, no database,
#              no browser, no test tools: the broker is the fleet's, far away.
#   installer  an installer's laptop: the deploy tools (satoyama-deploy) and mtools to
#              write a card image without mounting it. No broker, database or tests.
#
#   EXTRAS      pip extras to install instead of the role's
#   WHEELHOUSE  a folder of wheels to install from instead of the package index
#               (offline; it must hold this project's wheel and every dependency's:
#               docs/installers.md says how to make one)
set -euo pipefail
cd "$(dirname "$0")/.."

role="${1:-dev}"
python="${PYTHON:-python3}"

say() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else say "need root for: $*"; exit 1
    fi
}

# What comes from Debian rather than PyPI, per role.
case "$role" in
    dev)
        # The broker the tests and the demo start, the tools the tests drive, the
        # browser that prints the nap sheet and opens the pages in tests, and the
        # Japanese font charts and sheets are drawn in; the virtual Pi's emulator, the ROM
        # of its virtual network card (ipxe-qemu, only recommended by QEMU) and the ssh
        # client its stage drives it with (scripts/vpi/build-image.sh installs the image
        # tools it lacks itself, but not when its image is already cached).
        apt_want=(mosquitto postgresql mtools dosfstools fusefat chromium fonts-noto-cjk
                  qemu-system-arm ipxe-qemu openssh-client)
        default_extras="sim,cloud,test"
        ;;
    device)
        apt_want=()
        default_extras="pi"
        ;;
    installer)
        apt_want=(mtools)
        default_extras="deploy"
        ;;
    -h|--help|help)
        sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        say "unknown role '$role'; expected dev, device or installer"
        exit 2
        ;;
esac
extras="${EXTRAS:-$default_extras}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    say "Python 3.11 or newer is required ($python is $("$python" --version 2>&1))"
    exit 1
fi

if [[ $role == device && -z ${WHEELHOUSE:-} ]] \
    && ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    # lgpio ships an aarch64 wheel for Python 3.11 only (Bookworm); on any other Python
    # pip builds it from source, with swig, against the C library from Raspberry Pi
    # OS's archive (liblgpio-dev).
    if apt-cache show liblgpio-dev >/dev/null 2>&1; then
        apt_want+=(swig liblgpio-dev python3-dev)
    else
        say "no lgpio wheel for this Python and no liblgpio-dev package: pip will try to build lgpio"
    fi
fi

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
# Reinstall only when pyproject.toml, the role or the extras changed since the last install.
stamp=.venv/.satoyama-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"
[[ $role == dev ]] || want+=" $role"
[[ -z ${WHEELHOUSE:-} ]] || want+=" wheelhouse"
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    if [[ -n ${WHEELHOUSE:-} ]]; then
        # Offline: this project's wheel and its dependencies from the wheelhouse only.
        say "installing satoyama-edge[$extras] into .venv from $WHEELHOUSE (no package index)"
        .venv/bin/python -m pip install -q --no-index --find-links "$WHEELHOUSE" \
            "satoyama-edge[$extras]"
    else
        say "installing satoyama-edge[$extras] into .venv"
        .venv/bin/python -m pip install -q --upgrade pip >/dev/null
        .venv/bin/python -m pip install -q -e ".[$extras]"
    fi
    printf '%s' "$want" > "$stamp"
fi
case "$role" in
    device) say "ready: .venv/bin/edge check --config /etc/satoyama/device.toml" ;;
    installer) say "ready: .venv/bin/satoyama-deploy --help (docs/installers.md)" ;;
    *) say "ready" ;;
esac
