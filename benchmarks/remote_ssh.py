"""Benchmark on a Raspberry Pi or any Linux board over ssh.

The board gets one file, ``edgecnn_runner.pyz`` (a zipapp of :mod:`pi_runner` and :mod:`measure`,
the same method as local runs), and the models; every point runs as its own ``ssh`` command and
process on the board and returns the same JSON row as a local run, tagged with the board's CPU
model, core count and OS. Files travel through ``ssh HOST 'cat > PATH'``; every remote word is
quoted with :func:`shlex.quote` and every local command is an argument list, so paths with
spaces, quotes, ``$`` or ``;`` arrive intact.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tempfile
import zipapp
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from edgecnn.benchmarks.runtimes import error_row, finish_row
from edgecnn.errors import EdgeCNNError

RUNNER_NAME = "edgecnn_runner.pyz"


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
class SSHTarget:
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
    _uploaded: dict[str, str] = field(default_factory=dict, init=False)

    @classmethod
    def parse(cls, url: str, **kwargs) -> "SSHTarget":
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme != "ssh" or not parts.hostname or port == -1 or parts.path not in ("", "/"):
            raise EdgeCNNError(f"bad --target {url!r}: expected ssh://[user@]host[:port]")
        if parts.hostname.startswith("-"):
            raise EdgeCNNError(f"bad ssh host {parts.hostname!r}")
        return cls(host=parts.hostname, user=parts.username, port=port, **kwargs)

    @property
    def label(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"ssh://{user}{self.host}" + (f":{self.port}" if self.port else "")

    def ssh_argv(self, command: str) -> list[str]:
        """The local argument list that runs the (already quoted) shell ``command`` on the board."""
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
        return argv + [f"{self.user}@{self.host}" if self.user else self.host, command]

    def run(self, command: str, data: bytes | None = None, timeout: float = 600.0) -> subprocess.CompletedProcess:
        """Run ``command`` on the board; an unreachable board raises with ssh's own reason."""
        try:
            proc = subprocess.run(self.ssh_argv(command), input=data, capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EdgeCNNError(f"{self.label}: no answer within {timeout:g} s") from None
        if proc.returncode == 255:  # ssh's own failure: connection, authentication, host key
            lines = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
            raise EdgeCNNError(f"cannot reach {self.label}: {lines[-1] if lines else 'ssh failed'}")
        return proc

    def upload(self, local: Path, remote: str) -> None:
        proc = self.run(f"cat > {shlex.quote(remote)}", data=Path(local).read_bytes())
        if proc.returncode != 0:
            raise EdgeCNNError(f"cannot write {remote} on {self.label}: "
                               f"{proc.stderr.decode(errors='replace').strip()[:200]}")

    run_options = None  # every point runs the same way: nothing to add to its identity

    @property
    def runner_path(self) -> str:
        return f"{self.workdir}/{RUNNER_NAME}"

    @property
    def workdir(self) -> str:
        if self._dir is None:
            raise RuntimeError("call prepare() first")
        return self._dir

    def prepare(self) -> dict:
        """Make the remote folder, ship the runner, and probe the board; returns its description.

        Raises one clear line when the board cannot be reached or has no NumPy / TFLite runtime.
        """
        if self.remote_dir:
            proc = self.run(f"mkdir -p -- {shlex.quote(self.remote_dir)}")
            self._dir = self.remote_dir.rstrip("/") or "/"
        else:
            proc = self.run("mktemp -d")
            self._dir, self._made_dir = proc.stdout.decode().strip(), True
        if proc.returncode != 0 or not self._dir:
            raise EdgeCNNError(f"cannot make a working folder on {self.label}: "
                               f"{proc.stderr.decode(errors='replace').strip()[:200]}")
        with tempfile.TemporaryDirectory() as tmp:
            self.upload(build_runner(Path(tmp) / RUNNER_NAME), self.runner_path)
        proc = self.run(f"{shlex.quote(self.python)} {shlex.quote(self.runner_path)} --probe")
        probe = _last_json(proc.stdout.decode(errors="replace"))
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
            proc = self.run(" ".join(shlex.quote(w) for w in words), timeout=timeout)
        except EdgeCNNError as exc:
            return error_row(point, str(exc))
        result = _last_json(proc.stdout.decode(errors="replace"))
        if result is None:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            return error_row(point, f"the board's runner failed (exit {proc.returncode})"
                                    + (f": {err[-1][:300]}" if err else ""))
        return finish_row(point, result)

    def close(self) -> None:
        """Remove the folder made by :meth:`prepare` (a user-given ``remote_dir`` is kept)."""
        if self._made_dir and self._dir:
            self.run(f"rm -rf -- {shlex.quote(self._dir)}")
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
