"""systemd units for a machine that runs speeddata unattended (a Pi, a rack server).

Pure text from a few choices, so a test reads and verifies them; ``speeddata service``
writes them. Exit code 2 (a configuration error, a port taken) is not restarted: the
unit stops and ``systemctl status`` shows the one-line cause, as ``speeddata up`` does.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from speeddata.config import ENV_HOME, RelayConfig

RMEM_MAX = RelayConfig().rcvbuf  # the kernel caps what the relay asks for at rmem_max
SYSCTL_FILE = "60-speeddata.conf"

ROLES = {
    "relay": "receives datagrams, caches them to disk and re-multicasts them",
    "serve": "the live stripchart page and its API",
    "archive": "uploads closed cache files to the S3-compatible archive",
}
ALWAYS = ("relay", "serve")  # the archive runs only where [archive] endpoint is set


def unit_name(role: str) -> str:
    return f"speeddata-{role}.service"


def units(user: str, home: Path, config: Path | None = None,
          python: str = sys.executable) -> dict[str, str]:
    """File name to text: one unit per role, and the sysctl file for the receive buffer."""
    files = {unit_name(role): _unit(role, about, user, home, config, python)
             for role, about in ROLES.items()}
    files[SYSCTL_FILE] = (
        "# speeddata: let the relay have the receive buffer it asks for, so a burst waits\n"
        "# in the kernel instead of being dropped ([relay] rcvbuf)\n"
        f"net.core.rmem_max = {RMEM_MAX}\n")
    return files


def _unit(role: str, about: str, user: str, home: Path, config: Path | None,
          python: str) -> str:
    command = [python, "-m", "speeddata", role, *(["--config", str(config)] if config else [])]
    state = (f"StateDirectory={home.name}" if home.parent == Path("/var/lib")
             else f"ReadWritePaths={home}")
    after = "network-online.target" + (f" {unit_name('relay')}" if role != "relay" else "")
    return f"""[Unit]
Description=speeddata {role}: {about}
After={after}
Wants=network-online.target

[Service]
Type=simple
User={user}
{state}
WorkingDirectory={home}
Environment={ENV_HOME}={home}
ExecStart={shlex.join(command)}
Restart=on-failure
RestartSec=2
RestartPreventExitStatus=2
TimeoutStopSec=20
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""


def next_steps(user: str, home: Path, unit_dir: Path, sysctl_dir: Path,
               python: str = sys.executable) -> str:
    """What the administrator runs after the files are written."""
    names = " ".join(unit_name(role) for role in ALWAYS)
    written = " ".join(unit_name(role) for role in ROLES)
    return f"""wrote {written} to {unit_dir} and {SYSCTL_FILE} to {sysctl_dir}; now run:
  id {user} || useradd --system --home-dir {home} --shell /usr/sbin/nologin {user}
  sysctl --system
  systemctl daemon-reload && systemctl enable --now {names}
  sudo -u {user} {ENV_HOME}={home} {python} -m speeddata status --url   # the page's link
with an archive ([archive] endpoint, and keys in [archive] credentials_file readable by
{user}), also: systemctl enable --now {unit_name("archive")}"""
