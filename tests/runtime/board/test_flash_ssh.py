"""board flash over a real sshd on 127.0.0.1 (Debian's openssh-server), started by the test.

Host and user keys are generated in tmp_path; the client checks the host key (a known_hosts
file written here) and logs in with the user key only. Skips with a message where sshd or
ssh-keygen is missing or sshd cannot start (``apt-get install openssh-server``).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sarvessel.runtime.board.errors import FlashError
from sarvessel.runtime.board.tools import check, flash

from .conftest import make_package

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class Sshd:
    port: int
    user: str
    options: list[str]

    def target(self, path: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    if not (Path(SSHD).is_file() and shutil.which("ssh") and shutil.which("ssh-keygen")):
        pytest.skip("no sshd/ssh/ssh-keygen here (Debian: apt-get install openssh-server)")
    d = tmp_path / "sshd"
    d.mkdir()
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                       check=True, capture_output=True)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = _free_port()
    (d / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host_key'}
AuthorizedKeysFile {d / 'authorized_keys'}
PidFile {d / 'sshd.pid'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
""")
    (d / "known_hosts").write_text(
        f"[127.0.0.1]:{port} {(d / 'host_key.pub').read_text().split(' ', 2)[0]} "
        f"{(d / 'host_key.pub').read_text().split(' ', 2)[1]}\n")
    if os.geteuid() == 0:  # sshd's privilege separation directory (the service makes it)
        Path("/run/sshd").mkdir(exist_ok=True)
    log = (d / "sshd.log").open("wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    up = False
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                up = True
                break
        except OSError:
            time.sleep(0.1)
    if not up:
        proc.kill()
        proc.wait()
        pytest.skip(f"sshd could not start: {(d / 'sshd.log').read_text()[-300:]}")
    options = ["-F", "/dev/null", "-i", str(d / "user_key"), "-o", "IdentitiesOnly=yes",
               "-o", f"UserKnownHostsFile={d / 'known_hosts'}",
               "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"]
    yield Sshd(port, getpass.getuser(), options)
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_flash_over_ssh(tmp_path: Path, package: Path, sshd: Sshd) -> None:
    dest = tmp_path / "board" / "opt" / "deploy"
    r = flash(package, sshd.target(dest), ssh_options=sshd.options)
    assert not r.previous_kept
    assert _tree(dest) == _tree(package)
    pkg2 = make_package(tmp_path / "pkg2", clock_mhz=150.0)
    r = flash(pkg2, sshd.target(dest), ssh_options=sshd.options)
    assert r.previous_kept
    assert _tree(dest) == _tree(pkg2)
    assert _tree(dest.with_name("deploy.prev")) == _tree(package)
    assert not dest.with_name("deploy.new").exists()
    assert check(dest, backend="sim", power=lambda: None).passed  # what the board would run


def test_ssh_checksum_mismatch_is_refused(tmp_path: Path, package: Path, sshd: Sshd) -> None:
    import io

    dest = tmp_path / "deploy"
    flash(package, sshd.target(dest), ssh_options=sshd.options)
    before = _tree(dest)

    def corrupt(path: Path):  # type: ignore[no-untyped-def]
        data = bytearray(path.read_bytes())
        if path.name == "accelerator.bit":
            data[100] ^= 0x01
        return io.BytesIO(bytes(data))

    pkg2 = make_package(tmp_path / "pkg2", clock_mhz=150.0)
    with pytest.raises(FlashError, match="at verify, previous package kept: sarvessel-flash: "
                                         "checksum mismatch"):
        flash(pkg2, sshd.target(dest), ssh_options=sshd.options, opener=corrupt)
    assert _tree(dest) == before


def test_ssh_interrupted_transfer_keeps_the_previous_package(tmp_path: Path, package: Path,
                                                             sshd: Sshd) -> None:
    dest = tmp_path / "deploy"
    flash(package, sshd.target(dest), ssh_options=sshd.options)
    before = _tree(dest)
    # an ssh that loses the connection after 8 KiB of the stream
    cut = tmp_path / "ssh-cut"
    cut.write_text(f"#!/bin/sh\nhead -c 8192 | {shutil.which('ssh')} \"$@\"\n")
    cut.chmod(0o755)
    pkg2 = make_package(tmp_path / "pkg2", clock_mhz=150.0)
    with pytest.raises(FlashError, match="previous package kept"):
        flash(pkg2, sshd.target(dest), ssh_options=sshd.options, ssh=str(cut))
    assert _tree(dest) == before
    flash(pkg2, sshd.target(dest), ssh_options=sshd.options)  # the next flash cleans up
    assert _tree(dest) == _tree(pkg2)
    assert not (tmp_path / "deploy.new").exists()


def test_ssh_unreachable_is_one_line(tmp_path: Path, package: Path, sshd: Sshd) -> None:
    with pytest.raises(FlashError, match="failed at copy"):
        flash(package, f"ssh://{sshd.user}@127.0.0.1:1{tmp_path}/x",
              ssh_options=[*sshd.options, "-o", "ConnectTimeout=2"], timeout_s=30)
