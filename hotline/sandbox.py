"""A real Asterisk 22 on machines without Docker: a Debian sid root run with chroot.

`docker/sandbox/build-root.sh` builds and caches the root; this module writes the
compiled hotline config into an *instance* inside it, starts Asterisk, waits for
FullyBooted on AMI and stops it by pid. Each instance has its own config, run,
log, spool and astdb directories and its own ports, so a developer's sandbox and
the test suite's never collide. The root shares loopback with the host, so SIP,
RTP, AMI and FastAGI all meet on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from cti.ami.protocol import AMIParser, encode_action
from dialplans import configdir
from dialplans.compiler import AsteriskSettings, CompiledHotline, compile_hotline
from dialplans.definition import HotlineDefinition
from dialplans.prompts import render_moh, render_prompts

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "docker" / "sandbox" / "build-root.sh"


class SandboxError(RuntimeError):
    """The sandbox could not be built, started or reached; the message says which."""


@dataclass(frozen=True, slots=True)
class SandboxPorts:
    sip: int = 5060
    ami: int = 5038
    agi: int = 4573
    rtp_start: int = 10000
    rtp_end: int = 10999

    @classmethod
    def offset(cls, base: int) -> SandboxPorts:
        """A second set of ports, e.g. offset(20000) for the test suite."""
        return cls(sip=base + 5060, ami=base + 5038, agi=base + 4573,
                   rtp_start=base + 10000, rtp_end=base + 10999)


def root_path() -> Path:
    out = subprocess.run(["bash", str(BUILD_SCRIPT), "--print-path"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def ensure_root() -> Path:
    """Build the root if it is missing or stale (about a minute), else reuse it."""
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SandboxError(f"building the sandbox root failed:\n{proc.stdout}{proc.stderr}")
    return root_path()


def ensure_hosts_entry(root: Path, hostname: str | None = None) -> None:
    """Make the root's /etc/hosts resolve this machine's host name to loopback.

    Asterisk looks its own host name up (RTP/ICE host candidates, pjproject); inside the
    root that name is unknown, and each lookup stalls about 5 s in the resolver.
    """
    name = hostname or socket.gethostname()
    hosts = root / "etc" / "hosts"
    try:
        text = hosts.read_text()
    except FileNotFoundError:
        text = "127.0.0.1\tlocalhost\n"
    if any(name in line.split()[1:] for line in text.splitlines() if not line.lstrip().startswith("#")):
        return
    hosts.parent.mkdir(parents=True, exist_ok=True)
    tmp = hosts.with_name(f".hosts.{os.getpid()}")
    tmp.write_text(text + ("" if text.endswith("\n") or not text else "\n") + f"127.0.1.1\t{name}\n")
    os.replace(tmp, hosts)


class Sandbox:
    """One Asterisk instance inside the shared root."""

    def __init__(self, root: Path, instance: str, ports: SandboxPorts, *, state_dir: Path) -> None:
        if not instance.replace("-", "").isalnum():
            raise ValueError(f"instance names are letters, digits and '-': {instance!r}")
        self.root = root
        self.instance = instance
        self.ports = ports
        self.state_dir = state_dir
        self.etc = f"/etc/hotline/{instance}"
        self.run = f"/run/hotline/{instance}"
        self.log = f"/var/log/hotline/{instance}"
        self.spool = f"/var/spool/hotline/{instance}"
        self.lib = f"/var/lib/hotline/{instance}"

    # -- paths -------------------------------------------------------------------
    def host(self, inside: str) -> Path:
        """The host path of a path as Asterisk sees it inside the root."""
        return self.root / inside.lstrip("/")

    @property
    def recordings_dir(self) -> Path:
        return self.host(f"{self.spool}/monitor")

    @property
    def sounds_dir(self) -> Path:
        return self.host(f"{self.lib}/sounds")

    @property
    def log_dir(self) -> Path:
        return self.host(self.log)

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"asterisk-{self.instance}.pid"

    @property
    def secrets_file(self) -> Path:
        return self.state_dir / f"sandbox-{self.instance}.json"

    # -- configuration -----------------------------------------------------------
    def load_or_create_secrets(self, defn: HotlineDefinition) -> dict[str, object]:
        """AMI secret and agent SIP passwords, generated once per instance."""
        data: dict[str, object] = {}
        if self.secrets_file.is_file():
            data = json.loads(self.secrets_file.read_text())
        data.setdefault("ami_secret", secrets.token_urlsafe(18))
        passwords = dict(data.get("agent_passwords", {}))  # type: ignore[call-overload]
        for aid in defn.agents:
            passwords.setdefault(aid, secrets.token_urlsafe(12))
        data["agent_passwords"] = passwords
        data["ports"] = asdict(self.ports)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.secrets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.chmod(0o600)
        tmp.replace(self.secrets_file)
        return data

    def settings(self, defn: HotlineDefinition) -> AsteriskSettings:
        data = self.load_or_create_secrets(defn)
        return AsteriskSettings(
            ami_secret=str(data["ami_secret"]),
            agent_passwords=dict(data["agent_passwords"]),  # type: ignore[call-overload]
            sip_port=self.ports.sip,
            ami_port=self.ports.ami,
            agi_port=self.ports.agi,
            rtp_start=self.ports.rtp_start,
            rtp_end=self.ports.rtp_end,
            sounds_dir=f"{self.lib}/sounds",
            moh_dir=f"{self.lib}/moh",
            recordings_dir=f"{self.spool}/monitor",
            media_address="127.0.0.1",
            directories={
                "astetcdir": self.etc,
                "astrundir": self.run,
                "astlogdir": self.log,
                "astspooldir": self.spool,
                "astdbdir": f"{self.lib}/db",
            },
        )

    def install(self, defn: HotlineDefinition, *, cache_dir: Path | None = None,
                compile_fn: Callable[[HotlineDefinition, AsteriskSettings], CompiledHotline] = compile_hotline,
                prompts_src: Path | None = None) -> CompiledHotline:
        """Compile, render prompts and write every config file (one atomic generation)."""
        compiled = compile_fn(defn, self.settings(defn))
        for inside in (self.run, self.log, f"{self.log}/cdr-csv", self.spool, f"{self.spool}/monitor",
                       f"{self.lib}/db", f"{self.lib}/sounds", f"{self.lib}/moh", f"{self.log}/cdr-custom"):
            self.host(inside).mkdir(parents=True, exist_ok=True)
        render_prompts(defn, self.sounds_dir, prompts_src=prompts_src, cache_dir=cache_dir)
        render_moh(self.host(f"{self.lib}/moh"))
        self.write_files(compiled)
        return compiled

    def write_files(self, compiled: CompiledHotline) -> None:
        """All files as one new generation behind the etc link (dialplans.configdir): never a mix."""
        configdir.install(self.host(self.etc), compiled.files)
        configdir.prune(self.host(self.etc))

    def remove_dirs(self) -> None:
        """Delete this instance's directories inside the root (after stop)."""
        configdir.remove(self.host(self.etc))
        for inside in (self.run, self.log, self.spool, self.lib):
            shutil.rmtree(self.host(inside), ignore_errors=True)

    # -- process -----------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def start(self) -> int:
        """Start Asterisk in the background (own session, survives the CLI)."""
        if (pid := self.pid()) is not None:
            raise SandboxError(f"sandbox {self.instance} already runs as pid {pid}")
        for inside in (self.run, self.log):
            self.host(inside).mkdir(parents=True, exist_ok=True)
        ensure_hosts_entry(self.root)
        # Stale control socket from a killed instance would make Asterisk refuse to start.
        (self.host(self.run) / "asterisk.ctl").unlink(missing_ok=True)
        # posix_spawn in a new session, no Popen object: Asterisk outlives `hotline sandbox up`,
        # and the pid file is how every later command finds it.
        console = os.open(self.log_dir / "console.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            pid = os.posix_spawn(
                "/usr/sbin/chroot",
                ["chroot", str(self.root), "/usr/sbin/asterisk", "-f", "-n", "-g", "-C", f"{self.etc}/asterisk.conf"],
                dict(os.environ),
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_DUP2, console, 1), (os.POSIX_SPAWN_DUP2, console, 2)],
                setsid=True,
            )
        finally:
            os.close(console)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(str(pid))
        return pid

    async def wait_booted(self, timeout: float = 30.0) -> None:
        """Wait for FullyBooted on AMI: the only reliable sign every module loaded."""
        data = json.loads(self.secrets_file.read_text())
        deadline = time.monotonic() + timeout
        last_error = "no connection yet"
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise SandboxError(f"Asterisk exited during boot; see {self.log_dir / 'console.log'}:\n"
                                   + self.console_tail())
            try:
                await asyncio.wait_for(self._await_fully_booted(str(data["ami_secret"])),
                                       max(0.1, deadline - time.monotonic()))
                return
            except (OSError, asyncio.IncompleteReadError, ConnectionError) as exc:
                last_error = str(exc)
                await asyncio.sleep(0.1)  # Asterisk is not listening yet: poll the port
            except TimeoutError:
                break
        raise SandboxError(f"Asterisk did not report FullyBooted within {timeout}s ({last_error}):\n"
                           + self.console_tail())

    async def _await_fully_booted(self, secret: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.ports.ami)
        try:
            parser = AMIParser()
            writer.write(encode_action("Login", "boot-1", {"Username": "hotline", "Secret": secret}))
            await writer.drain()
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    raise ConnectionError("AMI closed the connection")
                for msg in parser.feed(chunk):
                    if msg.kind == "response" and msg.name.lower() == "error":
                        raise SandboxError(f"AMI login refused: {msg.get('Message')}")
                    if msg.kind == "event" and msg.name == "FullyBooted":
                        return
        finally:
            writer.close()
            await writer.wait_closed()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop by pid: SIGTERM (Asterisk shuts down cleanly), SIGKILL after timeout."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._alive(pid):
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            while self._alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def _alive(self, pid: int) -> bool:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
            if waited == pid:
                return False
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def console_tail(self, lines: int = 40) -> str:
        parts = []
        for name in ("console.log", "messages.log"):
            path = self.log_dir / name
            if path.is_file():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts)

    def status(self) -> dict[str, object]:
        return {"instance": self.instance, "root": str(self.root), "pid": self.pid(),
                "ports": asdict(self.ports), "log_dir": str(self.log_dir)}

    def with_ports(self, ports: SandboxPorts) -> Sandbox:
        return Sandbox(self.root, self.instance, replace(ports), state_dir=self.state_dir)
