#!/bin/sh
# Satoyama Edge first-boot hook.  `satoyama-deploy provision` copies it onto the
# boot partition as satoyama/firstboot.sh, next to wipe.sh, firstboot.env
# (settings), secrets/ (config, the one-time claim, the fleet CA, network keys),
# etc/ (updater settings, OTA verify keys) and the signed OTA bundle.  It runs
# once as root:
#
#   - Trixie images:   from cloud-init's runcmd (user-data)
#   - Bookworm images: from firstrun.sh, started by systemd.run= on cmdline.txt
#   - on later boots:  from satoyama-firstboot.service, until it has succeeded
#
#   sh firstboot.sh BOOT_DIR
#
# Every step may run again after a power cut.  FAT has no permissions, so the
# secrets are moved into /etc with mode 0600, then overwritten on the card and
# deleted (wipe.sh: a plain delete leaves their bytes in FAT's free clusters).
# The device's private key is made here (edge.link.enrol) and never was on the card.
# The log goes to BOOT_DIR/satoyama-firstboot.log so an installer can read it on
# a laptop; it never contains a secret.
set -eu

BOOT=${1:-/boot/firmware}
SRC=$BOOT/satoyama
LOG=$BOOT/satoyama-firstboot.log

if [ ! -f "$SRC/firstboot.env" ]; then
    echo "satoyama first boot: nothing to do ($SRC/firstboot.env is missing)"
    exit 0
fi
# DEVICE_ID HOSTNAME_WANTED SERVICE_USER PYTHON BUNDLE INTERFACES WIFI_COUNTRY
# TIMEZONE ADMIN_USER MECHANISM CLAIM_PORT (written by satoyama-deploy, shell-quoted)
. "$SRC/firstboot.env"
CLAIM_PORT=${CLAIM_PORT:-}

exec >>"$LOG" 2>&1
echo "== satoyama first boot $(date -u +%Y-%m-%dT%H:%M:%SZ): device $DEVICE_ID ($MECHANISM)"

fail() {
    trap - EXIT
    echo "FAILED: $*"
    printf '%s\n' "$*" >"$BOOT/satoyama-FAILED.txt"
    sync
    exit 1
}
trap 'fail "step failed near line $LINENO (see satoyama-firstboot.log)"' EXIT

# 0. Retry on later boots until this script has succeeded (and removed itself).
cat >/etc/systemd/system/satoyama-firstboot.service <<EOF
[Unit]
Description=Satoyama Edge first-boot setup (retried until it succeeds)
ConditionPathExists=$SRC/firstboot.sh
After=local-fs.target
Before=satoyama-edge.service

[Service]
Type=oneshot
ExecStart=/bin/sh $SRC/firstboot.sh $BOOT
# Enrolment needs the network, which may come later than the boot: try again.
Restart=on-failure
RestartSec=300

[Install]
WantedBy=multi-user.target
EOF
systemctl enable satoyama-firstboot.service >/dev/null 2>&1 || true

# 1. The daemon's own user, in the hardware groups, with no login.
for g in gpio i2c dialout; do
    getent group "$g" >/dev/null || groupadd --system "$g"
done
if ! id "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /var/lib/satoyama --no-create-home \
        --shell /usr/sbin/nologin --comment "Satoyama Edge daemon" "$SERVICE_USER"
fi
usermod -a -G gpio,i2c,dialout "$SERVICE_USER"

# 2. Secrets off the FAT partition: copy (0600), sync, rename into place, then
# overwrite on the card and delete.
install -d -m 0750 -o root -g "$SERVICE_USER" /etc/satoyama
install -d -m 0700 -o root -g root /etc/NetworkManager/system-connections
if [ -d "$SRC/secrets" ]; then
    for f in "$SRC"/secrets/*; do
        [ -f "$f" ] || continue
        name=$(basename "$f")
        case $name in
            *.nmconnection) dir=/etc/NetworkManager/system-connections; owner=root ;;
            *) dir=/etc/satoyama; owner=$SERVICE_USER ;;
        esac
        install -m 0600 -o "$owner" -g "$owner" "$f" "$dir/.$name.new"
        sync
        mv -f "$dir/.$name.new" "$dir/$name"
    done
    sync
    sh "$SRC/wipe.sh" "$SRC"/secrets/* || fail "could not overwrite the secrets on the boot partition"
    rm -rf "$SRC/secrets"
    sync
    echo "secrets moved to /etc/satoyama and NetworkManager (0600), overwritten and deleted on the boot partition"
fi
# Public settings: updater configuration and OTA verify keys.
if [ -d "$SRC/etc" ]; then
    cp -R "$SRC/etc/." /etc/satoyama/
    chown -R root:root /etc/satoyama/updater.toml /etc/satoyama/ota-keys
    chmod 0644 /etc/satoyama/updater.toml
    chmod 0755 /etc/satoyama/ota-keys
    chmod 0644 /etc/satoyama/ota-keys/*
fi
# cloud-init applied network-config before this ran; it held the Wi-Fi key.
if [ -f "$BOOT/network-config" ] && grep -q '^# satoyama:' "$BOOT/network-config"; then
    sh "$SRC/wipe.sh" --keep "$BOOT/network-config" || fail "could not overwrite network-config"
    printf '# satoyama: applied on first boot; the Wi-Fi key now lives only in /etc/netplan\n' \
        >"$BOOT/network-config"
    sync
fi

# 3. Network, clock, name, interfaces.
if command -v nmcli >/dev/null 2>&1; then nmcli connection reload || true; fi
if [ -n "$WIFI_COUNTRY" ] && command -v raspi-config >/dev/null 2>&1; then
    raspi-config nonint do_wifi_country "$WIFI_COUNTRY" || true
fi
if command -v rfkill >/dev/null 2>&1; then rfkill unblock wifi || true; fi
if [ "$MECHANISM" = firstrun ]; then
    if [ -x /usr/lib/raspberrypi-sys-mods/imager_custom ]; then
        /usr/lib/raspberrypi-sys-mods/imager_custom set_hostname "$HOSTNAME_WANTED" || true
        /usr/lib/raspberrypi-sys-mods/imager_custom set_timezone "$TIMEZONE" || true
    else
        echo "$HOSTNAME_WANTED" >/etc/hostname
        ln -sf "/usr/share/zoneinfo/$TIMEZONE" /etc/localtime
    fi
fi
for iface in $INTERFACES; do
    case $iface in
        i2c) raspi-config nonint do_i2c 0 || true ;;
        serial) raspi-config nonint do_serial_hw 0 || true; raspi-config nonint do_serial_cons 1 || true ;;
    esac
done

# 4. An administrator login (only when the installer gave an SSH key).
if [ -n "$ADMIN_USER" ] && [ -f "$SRC/admin_authorized_keys" ]; then
    if ! id "$ADMIN_USER" >/dev/null 2>&1; then
        useradd --create-home --shell /bin/bash --groups sudo,adm "$ADMIN_USER"
        passwd --lock "$ADMIN_USER" >/dev/null
    fi
    home=$(getent passwd "$ADMIN_USER" | cut -d: -f6)
    install -d -m 0700 -o "$ADMIN_USER" -g "$ADMIN_USER" "$home/.ssh"
    install -m 0600 -o "$ADMIN_USER" -g "$ADMIN_USER" "$SRC/admin_authorized_keys" "$home/.ssh/authorized_keys"
    systemctl enable ssh >/dev/null 2>&1 || true
fi

# 5. The daemon, from the signed bundle on the card, offline.  The updater that
# verifies and installs it ships inside the bundle, so it is bootstrapped into
# a throwaway venv first; the real install (signature and hashes checked before
# unpacking, its own venv, the 'current' link) is the updater's normal path.
if [ ! -e /opt/satoyama/current ]; then
    tmp=$(mktemp -d /var/tmp/satoyama-bootstrap.XXXXXX)
    "$PYTHON" - "$SRC/$BUNDLE" "$tmp/wheels" <<'PYEOF'
import os, sys, tarfile
bundle, dest = sys.argv[1], sys.argv[2]
os.makedirs(dest)
with tarfile.open(bundle, "r:") as tar:
    for m in tar:
        parts = m.name.split("/")
        if m.isfile() and len(parts) == 3 and parts[:2] == ["files", "wheels"] and parts[2].endswith(".whl"):
            with tar.extractfile(m) as src, open(os.path.join(dest, parts[2]), "wb") as out:
                out.write(src.read())
PYEOF
    "$PYTHON" -m venv --without-pip "$tmp/venv"
    pipwhl=$(ls "$tmp"/wheels/pip-*.whl | head -n 1)
    # Wheels only: no setup.py of a source package may ever run as root.
    "$tmp/venv/bin/python" "$pipwhl/pip" install --quiet --isolated --no-index --only-binary=:all: \
        --disable-pip-version-check --find-links "$tmp/wheels" satoyama-edge
    "$tmp/venv/bin/satoyama-update" --config /etc/satoyama/updater.toml install \
        --bundle "$SRC/$BUNDLE" --no-restart
    rm -rf "$tmp"
fi
test -x /opt/satoyama/current/venv/bin/edge || fail "the daemon is not installed"

# 5b. The device's own identity: its key is made here (0600, it never leaves the
# device) and the one-time claim from the card is exchanged for its certificate
# over the broker's enrolment listener.  No network yet: exit 1, retried on the
# next boot; a refused claim (used, expired, another device's): a new card.
if [ -n "$CLAIM_PORT" ] && [ ! -s /etc/satoyama/device.crt ]; then
    rc=0
    /opt/satoyama/current/venv/bin/python -m edge.link.enrol --config /etc/satoyama/device.toml \
        --claim-cert /etc/satoyama/claim.crt --claim-key /etc/satoyama/claim.key \
        --claim-port "$CLAIM_PORT" --timeout 900 || rc=$?
    case $rc in
        0) ;;
        2) fail "the fleet refused this card's claim (see satoyama-firstboot.log): provision the card again" ;;
        *) fail "no certificate yet: the broker's enrolment port $CLAIM_PORT was not reached (no network, or the broker refused an expired claim); retried on the next boot" ;;
    esac
fi
if [ -f /etc/satoyama/device.key ]; then
    chown "$SERVICE_USER:$SERVICE_USER" /etc/satoyama/device.key
    chmod 0600 /etc/satoyama/device.key
fi
rm -f /etc/satoyama/claim.key /etc/satoyama/claim.crt
/opt/satoyama/current/venv/bin/edge validate --config /etc/satoyama/device.toml

# 6. systemd units from the installed release.
install -m 0644 /opt/satoyama/current/systemd/*.service /opt/satoyama/current/systemd/*.timer \
    /opt/satoyama/current/systemd/*.path /etc/systemd/system/
systemctl daemon-reload
systemctl enable satoyama-update-recover.service satoyama-edge.service \
    satoyama-update.timer satoyama-update.path
if [ "$MECHANISM" = cloud-init ]; then
    systemctl start --no-block satoyama-edge.service satoyama-update.timer satoyama-update.path
fi

# 7. Done: nothing of ours stays on the boot partition but the log.
trap - EXIT
systemctl disable satoyama-firstboot.service >/dev/null 2>&1 || true
rm -f /etc/systemd/system/satoyama-firstboot.service "$BOOT/satoyama-FAILED.txt"
rm -rf "$SRC"
sync
echo "== satoyama first boot done: $(/opt/satoyama/current/venv/bin/edge --version)"
