"""Benchmark on a Raspberry Pi or any Linux board over ssh.

The board gets one file, ``edgecnn_runner.pyz`` (a zipapp of :mod:`pi_runner` and :mod:`measure`,
the same method as local runs), and the models; every point runs as its own ``ssh`` command and
process on the board and returns the same JSON row as a local run, tagged with the board's CPU
model, core count and OS. Files travel through ``ssh HOST 'cat > PATH'``; every remote word is
quoted with :func:`shlex.quote` and every local command is an argument list, so paths with
spaces, quotes, ``$`` or ``;`` arrive intact.

The target is untrusted text: the user must be a login name, the host a DNS name (or ssh_config
alias), an IPv4 or a bracketed IPv6 address, the port 1-65535, and ``--`` ends ssh's options before
the destination, so nothing in ``--target`` reaches ssh as an option. ssh exits 255 both when it
cannot connect and when the remote command dies from a signal, so every command runs under
``sh -c`` that prints the command's status after it (:data:`STATUS_MARK`): a missing mark means
the board was not reached, a status of 128 + N means the command was killed by signal N.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import shlex
import signal
import shutil
import subprocess
import tempfile
import zipapp
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from edgecnn.benchmarks.runtimes import error_row, finish_row
from edgecnn.benchmarks.target import Target, machine
from edgecnn.errors import EdgeCNNError

RUNNER_NAME = "edgecnn_runner.pyz"
STATUS_MARK = b"__edgecnn_status="
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")  # POSIX portable login names
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")  # DNS labels and ssh_config aliases
_SCOPE = re.compile(r"[A-Za-z0-9_.-]+")  # an IPv6 zone such as eth0


def _valid_host(host: str) -> bool:
    """A DNS name or ssh_config alias, an IPv4 address or an IPv6 address (URL brackets removed)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return len(host) <= 253 and all(_LABEL.fullmatch(label) for label in host.removesuffix(".").split("."))
    scope = getattr(address, "scope_id", None)
    return scope is None or bool(_SCOPE.fullmatch(scope))


def _status_reported(command: str) -> str:
    """``command`` run by ``sh`` on the board, which then prints its exit status on stderr."""
    return "sh -c " + shlex.quote(f"{command}; printf '\\n%s%d\\n' {STATUS_MARK.decode()} \"$?\" >&2")


def _signal_text(returncode: int) -> str:
    """``signal 11 (SIGSEGV)`` for a process status of -11."""
    try:
        return f"signal {-returncode} ({signal.Signals(-returncode).name})"
    except ValueError:
        return f"signal {-returncode}"


def build_runner(dest: Path) -> Path:
    """Write the single-file board runner (zipapp: pi_runner as __main__, plus measure.py)."""
    here = Path(__file__).parent
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(here / "pi_runner.py", Path(tmp) / "__main__.py")
        shutil.copy(here / "measure.py", Path(tmp) / "measure.py")
        zipapp.create_archive(tmp, dest)
    return dest


def _last_json(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


@dataclass
class SSHTarget(Target):
    """``ssh://[user@]host[:port]`` plus the options of ``edgecnn bench --target``.

    ``python``: the board's interpreter (a path or a command on its PATH); ``remote_dir``: where
    files go (default: a fresh ``mktemp -d``, removed afterwards); ``options``: extra ``ssh -o``
    settings, e.g. ``UserKnownHostsFile=/tmp/kh``.
    """

    host: str
    user: str | None = None
    port: int | None = None
    key: str | None = None
    python: str = "python3"
    remote_dir: str | None = None
    options: list[str] = field(default_factory=list)
    connect_timeout: int = 10
    _dir: str | None = field(default=None, init=False)
    _made_dir: bool = field(default=False, init=False)
    found: dict = field(default_factory=dict, init=False)  # the probe's Python, NumPy and interpreter
    _uploaded: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.user is not None and not _USER.fullmatch(self.user):
            raise EdgeCNNError(f"bad ssh user {self.user!r}: letters, digits, '_', '.' and '-' (not first)")
        if not _valid_host(self.host):
            raise EdgeCNNError(f"bad ssh host {self.host!r}: expected a DNS name, an IPv4 address or a "
                               f"bracketed IPv6 address")
        if self.port is not None and (type(self.port) is not int or not 1 <= self.port <= 65535):
            raise EdgeCNNError(f"bad ssh port {self.port!r}: expected 1-65535")

    @classmethod
    def parse(cls, url: str, **kwargs) -> "SSHTarget":
        """An ``ssh://[user@]host[:port]`` URL; anything else (a password, a path, a query) is refused."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            parts = port = None
        if (parts is None or parts.scheme != "ssh" or not parts.hostname or parts.password is not None
                or parts.path not in ("", "/") or parts.query or parts.fragment or port == 0):
            raise EdgeCNNError(f"bad --target {url!r}: expected ssh://[user@]host[:port]")
        user = unquote(parts.username) if parts.username is not None else None  # %-escapes: checked decoded
        return cls(host=unquote(parts.hostname), user=user, port=port, **kwargs)

    @property
    def label(self) -> str:
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{user}{host}" + (f":{self.port}" if self.port else "")

    def ssh_argv(self, command: str) -> list[str]:
        """The local argument list that runs the (already quoted) shell ``command`` on the board;
        ``--`` ends ssh's options before the destination."""
        if shutil.which("ssh") is None:
            raise EdgeCNNError("ssh is not installed here (apt-get install openssh-client)")
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}"]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.key:
            if not Path(self.key).is_file():
                raise EdgeCNNError(f"ssh key {self.key} does not exist")
            argv += ["-i", self.key, "-o", "IdentitiesOnly=yes"]
        for opt in self.options:
            argv += ["-o", opt]
        return argv + ["--", f"{self.user}@{self.host}" if self.user else self.host, command]

    def ssh(self, command: str, data: bytes | None = None, timeout: float = 600.0) -> subprocess.CompletedProcess:
        """Run ``command`` on the board; an unreachable board raises with ssh's own reason.

        The result's ``returncode`` is the command's, -N when signal N killed it (as local
        processes report it); ``stderr`` is the command's, without the status mark.
        """
        try:
            proc = subprocess.run(self.ssh_argv(_status_reported(command)), input=data, capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EdgeCNNError(f"{self.label}: no answer within {timeout:g} s") from None
        head, mark, tail = proc.stderr.rpartition(b"\n" + STATUS_MARK)
        if not mark or not tail.strip().isdigit():  # ssh's own failure: connection, authentication, host key
            lines = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
            raise EdgeCNNError(f"cannot reach {self.label}: {lines[-1] if lines else 'ssh failed'}")
        status = int(tail.strip())
        killed = 128 < status < 128 + signal.NSIG  # how a POSIX shell reports a signal
        return subprocess.CompletedProcess(proc.args, 128 - status if killed else status, proc.stdout, head)

    def _killed(self, proc: subprocess.CompletedProcess) -> str:
        """``runner killed by signal 11 (SIGSEGV) on ssh://...`` and the last line the runner printed."""
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        return (f"runner killed by {_signal_text(proc.returncode)} on {self.label}"
                + (f": {err[-1][:300]}" if err else ""))

    def upload(self, local: Path, remote: str) -> None:
        proc = self.ssh(f"cat > {shlex.quote(remote)}", data=Path(local).read_bytes())
        if proc.returncode != 0:
            raise EdgeCNNError(f"cannot write {remote} on {self.label}: "
                               f"{proc.stderr.decode(errors='replace').strip()[:200]}")

    runtime = "litert"  # the board runs .tflite files with its TFLite Interpreter (+ XNNPACK)

    @property
    def runner_path(self) -> str:
        return f"{self.workdir}/{RUNNER_NAME}"

    @property
    def workdir(self) -> str:
        if self._dir is None:
            raise RuntimeError("call prepare() first")
        return self._dir

    def prepare(self) -> dict:
        """Make the remote folder, ship the runner, and probe the board; returns the board's machine
        (:func:`~edgecnn.benchmarks.target.machine`); what the runner found (Python, NumPy, interpreter)
        is kept in ``found``. Raises one clear line when the board cannot be reached or has no NumPy
        or TFLite runtime; then a folder it made is removed again.
        """
        if self.remote_dir:
            proc = self.ssh(f"mkdir -p -- {shlex.quote(self.remote_dir)}")
            folder = self.remote_dir.rstrip("/") or "/"
            self._dir = folder if folder.startswith("/") else f"./{folder}"  # no word starts with '-'
        else:
            proc = self.ssh("mktemp -d")
            made = proc.stdout.decode(errors="replace").strip()
            self._made_dir = proc.returncode == 0 and made.startswith("/") and made != "/" and "\n" not in made
            self._dir = made if self._made_dir else None
        if proc.returncode != 0 or not self._dir:
            raise EdgeCNNError(f"cannot make a working folder on {self.label}: "
                               f"{proc.stderr.decode(errors='replace').strip()[:200]}")
        try:
            with tempfile.TemporaryDirectory() as tmp:
                self.upload(build_runner(Path(tmp) / RUNNER_NAME), self.runner_path)
            probe = self._probe()
            self.found = probe.get("found") or {}
            return machine(probe.get("machine") or {})
        except BaseException:  # a failed upload or probe (or Ctrl-C) leaves no folder on the board
            with contextlib.suppress(EdgeCNNError):
                self.close()
            raise

    def _probe(self) -> dict:
        """What the runner finds on the board (Python, NumPy, interpreter, machine); raises one line."""
        proc = self.ssh(f"{shlex.quote(self.python)} {shlex.quote(self.runner_path)} --probe")
        probe = _last_json(proc.stdout.decode(errors="replace"))
        if probe is None and proc.returncode < 0:
            raise EdgeCNNError(self._killed(proc))
        if probe is None:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            raise EdgeCNNError(f"{self.label}: cannot run the runner with {self.python!r}: "
                               f"{err[-1] if err else f'exit {proc.returncode}'}")
        if probe.get("status") != "ok":
            raise EdgeCNNError(f"{self.label}: {probe.get('error')}")
        return probe

    def run_point(self, point: dict, timeout: float = 600.0) -> dict:
        """Measure one point (``path``, ``threads``, ``protocol``) on the board; returns its row."""
        local = point["path"]
        if local not in self._uploaded:
            remote = f"{self.workdir}/{len(self._uploaded)}_{Path(local).name}"
            self.upload(Path(local), remote)
            self._uploaded[local] = remote
        words = [self.python, self.runner_path, "--model", self._uploaded[local],
                 "--protocol", json.dumps(point.get("protocol", {}))]
        if point.get("threads"):
            words += ["--threads", str(point["threads"])]
        try:
            proc = self.ssh(" ".join(shlex.quote(w) for w in words), timeout=timeout)
        except EdgeCNNError as exc:
            return error_row(point, str(exc))
        result = _last_json(proc.stdout.decode(errors="replace"))
        if result is None and proc.returncode < 0:
            return error_row(point, self._killed(proc))
        if result is None:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            return error_row(point, f"the board's runner failed (exit {proc.returncode})"
                                    + (f": {err[-1][:300]}" if err else ""))
        return finish_row(point, result)

    def close(self) -> None:
        """Remove the folder made by :meth:`prepare` (a user-given ``remote_dir`` is kept)."""
        if self._made_dir and self._dir:
            self.ssh(f"rm -rf -- {shlex.quote(self._dir)}")
        self._dir, self._made_dir = None, False
        self._uploaded.clear()


def main(argv: list[str] | None = None) -> int:
    """``python -m edgecnn.benchmarks.remote_ssh OUT.pyz``: write the board runner for manual use."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m edgecnn.benchmarks.remote_ssh",
                                     description="Write edgecnn's single-file board runner; copy it to "
                                                 "a board and run: python3 edgecnn_runner.pyz --probe")
    parser.add_argument("out", type=Path, nargs="?", default=Path(RUNNER_NAME),
                        help=f"where to write it (default ./{RUNNER_NAME})")
    print(build_runner(parser.parse_args(argv).out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
