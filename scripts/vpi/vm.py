"""The virtual Raspberry Pi: one card image booted in ``qemu-system-aarch64 -M virt`` (issue 16).

What the harness stands in for:

- **the Pi firmware**: at every boot it reads ``cmdline.txt`` from the card's FAT
  partition (mtools, no mount) and gives it to the kernel, so a first-boot hook on
  ``cmdline.txt`` (``systemd.run=``) and its removal behave as on a card;
  ``console=serial0`` becomes the virt machine's ``ttyAMA0``.  The kernel and
  initramfs are Debian's, copied out of the image when it was built
  (``build-image.sh``), not read from the card.
- **the power switch**: QEMU runs with ``-no-reboot``, so a guest reboot ends
  the QEMU process and the harness boots the card again (reading ``cmdline.txt``
  afresh); :meth:`VM.cut_power` SIGKILLs QEMU: no guest shutdown, the guest's
  page cache is lost.
- **the card's write cache**: the disk is served by ``nbd.py`` over a unix socket,
  with a write cache the guest sees (FLUSH and FUA): written blocks stay in that
  server's memory until the guest flushes them.  A power cut kills it with QEMU,
  so every write the guest had not flushed is lost, as from a card whose cache
  lost power; what was flushed is in the image.  (QEMU's own file backend would
  leave unflushed writes in the host's page cache, to reach the image anyway.)
- **the board**: QEMU's own device tree for the virt machine, with what a Pi's
  firmware puts there and gpiozero reads (``model``, ``/system/linux,revision``:
  a Pi 4 Model B, 1 GB) and without the virt machine's PL061 GPIO controller
  (8 lines that are no Pi's header).  There is no GPIO header: Debian bookworm's
  kernel has no gpio-sim to make one, so the daemon uses gpiozero's mock pins.
- **the network**: user mode, ``restrict=on``: the guest reaches nothing but what
  is forwarded, each forward named (``10.0.2.100:PORT`` in the guest → a port on
  the host's loopback, one relay process per connection); the host reaches the
  guest's ssh on a free loopback port.

Commands run over ssh as root with the key made with the image.  Everything is
killed on exit (context manager, and QEMU dies with its parent: PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
GUEST_HOST = "10.0.2.100"  # where the guest finds the forwarded host services
SECTOR = 512


def log(msg: str) -> None:
    """Progress, with the wall-clock time: the stage is long and CI shows it live."""
    print(f"[vpi {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def partition_offsets(image: Path) -> list[int]:
    """Byte offsets of the MBR's primary partitions (the card's layout)."""
    with image.open("rb") as f:
        mbr = f.read(512)
    if mbr[510:512] != b"\x55\xaa":
        raise RuntimeError(f"{image}: no MBR")
    offsets = []
    for i in range(4):
        entry = mbr[446 + 16 * i : 446 + 16 * (i + 1)]
        if entry[4] != 0:
            offsets.append(int.from_bytes(entry[8:12], "little") * SECTOR)
    return offsets


def fat_read(image: Path, name: str) -> bytes | None:
    """A file of the card's boot partition, read with mtools (None: no such file)."""
    offset = partition_offsets(image)[0]
    proc = subprocess.run(
        ["mtype", "-i", f"{image}@@{offset}", f"::{name}"],
        capture_output=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    )
    return proc.stdout if proc.returncode == 0 else None


def fat_list(image: Path, folder: str = "") -> list[str]:
    offset = partition_offsets(image)[0]
    proc = subprocess.run(
        ["mdir", "-b", "-i", f"{image}@@{offset}", f"::{folder}"],
        capture_output=True,
        text=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    )
    return [line.strip().removeprefix("::/") for line in proc.stdout.splitlines() if line.strip()]


def kernel_cmdline(image: Path) -> str:
    """cmdline.txt as the Pi firmware passes it, with the virt machine's console."""
    raw = fat_read(image, "cmdline.txt")
    if raw is None:
        raise RuntimeError(f"{image}: no cmdline.txt on the boot partition")
    tokens = []
    for t in raw.decode().split():
        if t.startswith("console="):
            continue
        tokens.append(t)
    return " ".join(["console=ttyAMA0,115200", *tokens])


PI_REVISION = 0xA03111  # Raspberry Pi 4 Model B rev 1.1, 1 GB (new-style revision code)
PI_MODEL = "Raspberry Pi 4 Model B Rev 1.1"


def pi_device_tree(workdir: Path, machine: list[str]) -> Path:
    """The virt machine's device tree as a Pi's firmware would hand it over (see above)."""
    dtb = workdir / "vpi-board.dtb"
    if dtb.exists():
        return dtb
    virt = workdir / "virt.dtb"
    subprocess.run(
        ["qemu-system-aarch64", machine[0], f"{machine[1]},dumpdtb={virt}", *machine[2:]],
        capture_output=True,
        check=True,
    )
    dts = subprocess.run(
        ["dtc", "-q", "-I", "dtb", "-O", "dts", str(virt)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    nodes = [line.strip().rstrip("{").strip() for line in dts.splitlines() if line.startswith("\t")]
    drop = [n for n in nodes if n.startswith("pl061@") or n == "gpio-keys"]
    dts += (
        "\n/ {\n"
        f'\tmodel = "{PI_MODEL}";\n'
        f"\tsystem {{ linux,revision = <{PI_REVISION:#x}>; }};\n"
        + "".join(f"\t/delete-node/ {n};\n" for n in drop)
        + "};\n"
    )
    subprocess.run(
        ["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(dtb), "-"],
        input=dts,
        text=True,
        check=True,
    )
    return dtb


def _die_with_parent() -> None:
    """QEMU gets SIGKILL when the harness dies, however it dies (prctl PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)


@dataclass
class VM:
    """One card image and the QEMU that boots it; use as a context manager."""

    image_dir: Path  # build-image.sh's output: vmlinuz, initrd.img, id_ed25519
    disk: Path  # this run's copy of the card
    workdir: Path  # console logs
    forwards: dict[int, int] = field(default_factory=dict)  # guest 10.0.2.100:port -> host port
    memory_mib: int = 1024
    cpus: int = 2
    cpu: str = "cortex-a72"  # a Pi 4's core
    ssh_port: int = 0
    boots: int = 0
    proc: subprocess.Popen[bytes] | None = None
    card: subprocess.Popen[bytes] | None = None  # the NBD server holding the write cache
    card_sock: Path | None = None
    booted_at: float = 0.0
    volatile_cache: bool = True  # False: QEMU's file backend (writes reach the host cache)

    def __enter__(self) -> VM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    # -- power ----------------------------------------------------------------------------

    def console_log(self) -> Path:
        return self.workdir / f"console-{self.boots}.log"

    def _card_on(self) -> list[str]:
        """The card's server (a fresh one each boot: its cache starts empty) and the
        QEMU arguments that attach it."""
        self._card_off()
        if not self.volatile_cache:
            return [
                "-drive", f"file={self.disk},format=raw,if=none,id=card,cache=writeback",
                "-device", "virtio-blk-pci,drive=card",
            ]  # fmt: skip
        # A unix socket path is at most 107 bytes: a short folder of its own.
        sock = Path(tempfile.mkdtemp(prefix="vpi-card-")) / "card.sock"
        self.card = subprocess.Popen(
            [sys.executable, str(HERE / "nbd.py"), "--socket", str(sock), str(self.disk)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        assert self.card.stdout is not None
        if self.card.stdout.readline().strip() != b"ready":
            raise RuntimeError("the card's NBD server did not start")
        self.card_sock = sock
        return [
            "-blockdev",
            f"driver=nbd,server.type=unix,server.path={sock},export=card,node-name=card",
            "-device", "virtio-blk-pci,drive=card,write-cache=on",
        ]  # fmt: skip

    def _card_off(self) -> None:
        """The card loses power: its server and with it every unflushed write."""
        if self.card is not None:
            if self.card.poll() is None:
                self.card.send_signal(signal.SIGKILL)
            self.card.wait()
            if self.card.stdout is not None:
                self.card.stdout.close()
            self.card = None
        if self.card_sock is not None:
            shutil.rmtree(self.card_sock.parent, ignore_errors=True)
            self.card_sock = None

    def power_on(self) -> None:
        """Boot the card: read cmdline.txt as the firmware would, start QEMU."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.boots += 1
        disk_args = self._card_on()
        self.ssh_port = free_port()
        cmdline = kernel_cmdline(self.disk)
        net = f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22"
        for guest_port, host_port in self.forwards.items():
            relay = f"{sys.executable} {HERE / 'relay.py'} 127.0.0.1 {host_port}"
            net += f",guestfwd=tcp:{GUEST_HOST}:{guest_port}-cmd:{relay}"
        machine = [
            "-M", "virt",
            "-cpu", self.cpu,
            "-smp", str(self.cpus),
            "-m", str(self.memory_mib),
        ]  # fmt: skip
        argv = [
            "qemu-system-aarch64",
            *machine,
            "-dtb", str(pi_device_tree(self.workdir, machine)),
            "-accel", "tcg,thread=multi",
            "-no-reboot",
            "-nodefaults",
            "-display", "none",
            "-kernel", str(self.image_dir / "vmlinuz"),
            "-initrd", str(self.image_dir / "initrd.img"),
            "-append", cmdline,
            *disk_args,
            "-netdev", net,
            "-device", "virtio-net-pci,netdev=n0",
            "-device", "virtio-rng-pci",
            "-serial", f"file:{self.console_log()}",
        ]  # fmt: skip
        log(f"power on (boot {self.boots}): {cmdline}")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / f"qemu-{self.boots}.err", "wb"),
            preexec_fn=_die_with_parent,
        )
        self.booted_at = time.monotonic()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cut_power(self) -> None:
        """Pull the plug: SIGKILL QEMU, no shutdown of any kind."""
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self._card_off()
            log("power cut (QEMU and the card's unflushed writes gone)")
        self._card_off()

    def kill(self) -> None:
        self.cut_power()
        self.proc = None

    def wait_halt(self, timeout_s: float) -> int:
        """Wait for the guest to reboot or power off (QEMU exits: -no-reboot)."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"the guest did not halt within {timeout_s:.0f} s") from None

    def wait_ssh(self, deadline_s: float, *, reboots: int = 0) -> float:
        """Wait until ssh answers; up to ``reboots`` guest reboots are followed by a new
        boot (as the Pi's firmware would).  Returns the seconds since the last power on."""
        end = time.monotonic() + deadline_s
        while True:
            if not self.running():
                assert self.proc is not None
                rc = self.proc.returncode
                if reboots > 0 and rc == 0:
                    reboots -= 1
                    log(f"the guest rebooted after {time.monotonic() - self.booted_at:.0f} s")
                    self.power_on()
                    continue
                raise RuntimeError(
                    f"QEMU exited ({rc}) before ssh answered; see {self.console_log()}\n"
                    + self.console_tail()
                )
            if time.monotonic() > end:
                raise TimeoutError(
                    f"no ssh within {deadline_s:.0f} s; console:\n" + self.console_tail()
                )
            proc = self.ssh("true", timeout_s=20, check=False, quiet=True)
            if proc.returncode == 0:
                took = time.monotonic() - self.booted_at
                log(f"ssh answers, {took:.0f} s after power on")
                return took
            time.sleep(2)

    def reboot(self, deadline_s: float) -> float:
        """A clean reboot (systemctl reboot), then the card boots again."""
        self.ssh("systemctl reboot", check=False, timeout_s=30)
        self.wait_halt(300)
        self.power_on()
        return self.wait_ssh(deadline_s)

    def shutdown(self, timeout_s: float = 180) -> None:
        """A clean power off; SIGKILL if the guest does not halt in time."""
        if not self.running():
            return
        self.ssh("systemctl poweroff", check=False, timeout_s=30)
        try:
            self.wait_halt(timeout_s)
        except TimeoutError:
            log("the guest did not power off in time: cutting power")
        self.kill()

    # -- commands -------------------------------------------------------------------------

    def ssh_argv(self) -> list[str]:
        return [
            "ssh",
            "-q",
            "-i", str(self.image_dir / "id_ed25519"),
            "-p", str(self.ssh_port),
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=10",
            "-o", "ServerAliveInterval=10",
            "root@127.0.0.1",
        ]  # fmt: skip

    def ssh(
        self,
        command: str,
        *,
        timeout_s: float = 300,
        check: bool = True,
        quiet: bool = False,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command in the guest as root."""
        if not quiet:
            log(f"guest$ {command if len(command) < 200 else command[:200] + ' ...'}")
        try:
            proc = subprocess.run(
                [*self.ssh_argv(), command],
                input=input.decode() if input is not None else None,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as e:
            if check:
                raise TimeoutError(f"guest command took over {timeout_s:.0f} s: {command}") from e
            return subprocess.CompletedProcess([command], 124, "", "timeout")
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"guest command failed ({proc.returncode}): {command}\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def copy_in(self, local: Path, remote: str) -> None:
        """A file into the guest (through ssh's standard input)."""
        with local.open("rb") as f:
            proc = subprocess.run(
                [*self.ssh_argv(), f"cat > {remote}"], stdin=f, capture_output=True, timeout=600
            )
        if proc.returncode != 0:
            raise RuntimeError(f"copying {local} to {remote} failed: {proc.stderr!r}")

    def console_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            text = self.console_log().read_bytes().decode("utf-8", "replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, every_s: float = 3) -> float:
    """Poll ``check`` until it is true; the seconds it took, or TimeoutError naming ``what``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(every_s)
    return time.monotonic() - start
