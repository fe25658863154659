"""edgecnn bench --target ssh://: for real, against Debian's OpenSSH server started on 127.0.0.1.

The test starts ``sshd -D -e`` as the current user on a free port with a throw-away host key and
client key (``ssh-keygen``), a temporary ``sshd_config`` and ``authorized_keys``, and stops it at
the end. The "board" is this machine: its Python is given with ``--remote-python``; its ``mktemp -d``
folders go to the fixture's ``board-tmp`` (sshd's ``SetEnv TMPDIR``). Paths with spaces, ``$``, ``;``
and quotes are used on both sides.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy
import pytest

from bench_helpers import tiny_tflite
from edgecnn.benchmarks.remote_ssh import SSHTarget

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
pytestmark = [
    pytest.mark.skipif(not os.path.exists(SSHD) or not shutil.which("ssh-keygen") or not shutil.which("ssh"),
                       reason="OpenSSH server/client not installed (apt-get install openssh-server)"),
    pytest.mark.xdist_group("sshd"),
]
VENV_PYTHON = sys.executable
QUICK = ["--runs", "5", "--min-secs", "0.01", "--warmup-runs", "1", "--warmup-secs", "0.01"]
WEIRD = "dir with space $HOME; 'q\" `x`"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / name)], check=True)
    (tmp / "authorized_keys").write_text((tmp / "client_key.pub").read_text())
    port = _free_port()
    (tmp / "board-tmp").mkdir()
    (tmp / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {tmp / 'host_key'}
AuthorizedKeysFile {tmp / 'authorized_keys'}
PidFile {tmp / 'sshd.pid'}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
SetEnv TMPDIR={tmp / 'board-tmp'}
""")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    log = open(tmp / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(tmp / "sshd_config")], stdout=log, stderr=log)
    deadline = time.time() + 10
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {(tmp / 'sshd.log').read_text()}")
        time.sleep(0.1)
    options = ["--ssh-key", str(tmp / "client_key"),
               "--ssh-option", f"UserKnownHostsFile={tmp / 'known_hosts'}",
               "--ssh-option", "StrictHostKeyChecking=accept-new"]
    yield {"url": f"ssh://{getpass.getuser()}@127.0.0.1:{port}", "options": options, "tmp": tmp,
           "port": port, "board_tmp": tmp / "board-tmp"}
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.fixture(scope="module")
def weird_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models") / WEIRD
    folder.mkdir()
    model = folder / "my model $1;'.tflite"
    shutil.copy(tiny_tflite(), model)
    return model


def _python_behind_weird_path(tmp: Path) -> str:
    """This machine's venv Python, started by a script whose path is full of shell metacharacters."""
    folder = tmp / "py $dir; 'x'"
    folder.mkdir(exist_ok=True)
    script = folder / "python 3"
    script.write_text(f"#!/bin/sh\nexec '{VENV_PYTHON}' \"$@\"\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.slow
def test_bench_over_ssh_returns_local_style_rows_tagged_with_the_board(cli, sshd, weird_model, tmp_path):
    remote_dir = tmp_path / f"remote {WEIRD}"
    r = cli("bench", weird_model, "--target", sshd["url"], *sshd["options"],
            "--remote-python", _python_behind_weird_path(sshd["tmp"]), "--remote-dir", remote_dir,
            "--threads", "1,2", *QUICK, "--json")
    assert r.code == 0, r
    report = json.loads(r.out)
    assert report["machine"]["cores"] == os.cpu_count() and report["machine"]["cpu"]
    rows = report["rows"]
    assert [x["threads"] for x in rows] == [1, 2]
    for row in rows:
        assert row["status"] == "ok" and row["target"] == sshd["url"]
        assert row["runs"] >= 5 and row["median_ms"] > 0 and row["peak_memory_bytes"] > 0
        assert row["precision"] == "float32" and row["file_bytes"] == weird_model.stat().st_size
        assert row["machine"]["os"] and row["machine"]["cores"] >= 1
        assert row["found"]["interpreter"].startswith("ai_edge_litert")
    # the board (this machine) received the files under the metacharacter path, byte for byte
    assert (remote_dir / f"0_{weird_model.name}").read_bytes() == weird_model.read_bytes()
    assert (remote_dir / "edgecnn_runner.pyz").is_file()


@pytest.mark.slow
def test_default_remote_folder_is_removed_and_table_printed(cli, sshd, weird_model):
    r = cli("bench", weird_model, "--target", sshd["url"], *sshd["options"],
            "--remote-python", VENV_PYTHON, "--threads", "1", *QUICK)
    assert r.code == 0, r
    assert "litert" in r.out and sshd["url"] in r.out
    opts = sshd["options"]
    target = SSHTarget.parse(sshd["url"], key=opts[1], python=VENV_PYTHON, options=[opts[3], opts[5]])
    target.prepare()
    workdir = Path(target.workdir)  # made with mktemp -d on the board (this machine)
    assert workdir.parent == sshd["board_tmp"] and (workdir / "edgecnn_runner.pyz").is_file()
    target.close()
    assert not workdir.exists()


def test_board_without_numpy_fails_clearly(cli, sshd, weird_model):
    if not os.path.exists("/usr/bin/python3") or subprocess.run(
            ["/usr/bin/python3", "-c", "import numpy"], capture_output=True).returncode == 0:
        pytest.skip("needs a /usr/bin/python3 without NumPy")
    r = cli("bench", weird_model, "--target", sshd["url"], *sshd["options"],
            "--remote-python", "/usr/bin/python3")
    assert r.code == 2 and r.out == ""
    assert r.err.count("\n") == 1 and "NumPy is not installed" in r.err and "Traceback" not in r.err


def test_board_with_numpy_but_no_interpreter_fails_clearly(cli, sshd, weird_model, tmp_path):
    # a board Python that has NumPy and nothing else: the system Python with only NumPy on its path
    only_numpy = tmp_path / "site $only numpy"
    only_numpy.mkdir()
    (only_numpy / "numpy").symlink_to(Path(numpy.__file__).parent)
    wrapper = tmp_path / "bare python"
    wrapper.write_text(f"#!/bin/sh\nexport PYTHONPATH='{only_numpy}'\nexec '{VENV_PYTHON}' -S \"$@\"\n")
    wrapper.chmod(0o755)
    r = cli("bench", weird_model, "--target", sshd["url"], *sshd["options"],
            "--remote-python", wrapper)
    assert r.code == 2 and r.out == "", r
    assert "no TFLite interpreter on this board: tried ai_edge_litert" in r.err
    assert "tflite_runtime" in r.err and "pip install ai-edge-litert" in r.err
    assert r.err.count("\n") == 1


def test_unreachable_board_is_one_line(cli, sshd, weird_model):
    port = _free_port()  # nothing listens there
    r = cli("bench", weird_model, "--target", f"ssh://nobody@127.0.0.1:{port}", *sshd["options"])
    assert r.code == 2 and r.out == ""
    assert r.err.startswith(f"edgecnn: error: cannot reach ssh://nobody@127.0.0.1:{port}: ")
    assert "Connection refused" in r.err and r.err.count("\n") == 1


def test_bad_target_url_and_non_tflite_input(cli, sshd, weird_model, tmp_path):
    r = cli("bench", weird_model, "--target", "ssh://host:notaport")
    assert r.code == 2 and "expected ssh://[user@]host[:port]" in r.err
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    r = cli("bench", onnx, "--target", sshd["url"], *sshd["options"])
    assert r.code == 2 and "remote targets run .tflite files only" in r.err


@pytest.mark.slow
def test_corrupt_model_on_the_board_is_an_error_row_others_survive(cli, sshd, weird_model, tmp_path):
    bad = tmp_path / "bad; rm -rf $HOME.tflite"
    bad.write_bytes(b"\x00" * 64)
    r = cli("bench", weird_model, bad, "--target", sshd["url"], *sshd["options"],
            "--remote-python", VENV_PYTHON, "--threads", "1", *QUICK, "--json")
    assert r.code == 2
    rows = {Path(x["path"]).name: x for x in json.loads(r.out)["rows"]}
    assert rows[weird_model.name]["status"] == "ok"
    assert rows[bad.name]["status"] == "error" and "cannot run" in rows[bad.name]["error"]
    assert r.err.count("edgecnn: error:") == 1


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_runner_killed_by_a_signal_is_not_called_unreachable(cli, sshd, weird_model, tmp_path):
    # the probe itself dies: prepare() fails, and the folder it made on the board goes too
    segv = _script(tmp_path / "segv python", "kill -SEGV $$\n")
    r = cli("bench", weird_model, "--target", sshd["url"], *sshd["options"], "--remote-python", segv)
    assert r.code == 2 and r.out == "" and r.err.count("\n") == 1, r
    assert r.err.startswith(f"edgecnn: error: runner killed by signal 11 (SIGSEGV) on {sshd['url']}")
    assert list(sshd["board_tmp"].iterdir()) == []
    # the probe works, the measurement dies: an error row that names the signal
    crash_later = _script(tmp_path / "crash later", f"""case "$*" in *--probe*) exec '{VENV_PYTHON}' "$@";; esac
kill -KILL $$
""")
    r = cli("bench", weird_model, "--target", sshd["url"], *sshd["options"], "--remote-python", crash_later,
            "--threads", "1", *QUICK, "--json")
    assert r.code == 2, r
    [row] = json.loads(r.out)["rows"]
    assert row["status"] == "error"
    assert row["error"].startswith(f"runner killed by signal 9 (SIGKILL) on {sshd['url']}")
    assert list(sshd["board_tmp"].iterdir()) == []


def test_target_injection_is_refused_before_ssh_runs(cli, weird_model, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "ssh", f"echo \"$@\" >> '{tmp_path / 'ssh.log'}'\n")  # records any ssh started
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    for target, why in (("ssh://-oProxyCommand=touch${IFS}X@127.0.0.1:1", "bad ssh user"),
                        ("ssh://%2DoProxyCommand=touch${IFS}X@127.0.0.1", "bad ssh user"),
                        ("ssh://pi@-oProxyCommand=x", "bad ssh host"),
                        ("ssh://pi@host%0Aname", "bad ssh host"),
                        ("ssh://pi@host:0", "bad --target"),
                        ("ssh://pi:secret@host", "bad --target")):
        r = cli("bench", weird_model, "--target", target)
        assert r.code == 2 and r.out == "" and r.err.count("\n") == 1, r
        assert r.err.startswith(f"edgecnn: error: {why} "), r
    assert not (tmp_path / "ssh.log").exists() and not (tmp_path / "X").exists()


def test_valid_targets_reach_ssh_after_its_options_end():
    for url, dest in (("ssh://pi@raspberrypi.local:2222", "pi@raspberrypi.local"), ("ssh://my_pi", "my_pi"),
                      ("ssh://root@10.0.0.7", "root@10.0.0.7"), ("ssh://u@[fe80::1%25eth0]:22", "u@fe80::1%eth0")):
        argv = SSHTarget.parse(url).ssh_argv("true")
        assert argv[-3:] == ["--", dest, "true"], argv


def test_prepare_returns_the_board_in_the_one_machine_shape(sshd):
    from edgecnn.benchmarks.target import MACHINE_FIELDS, LocalTarget

    opts = sshd["options"]
    with SSHTarget.parse(sshd["url"], key=opts[1], python=VENV_PYTHON, options=[opts[3], opts[5]]) as target:
        board = target.prepare()
        assert target.found["interpreter"].startswith("ai_edge_litert")
    here = LocalTarget().prepare()
    assert tuple(board) == tuple(here) == MACHINE_FIELDS
    # the board is this machine: what does not change between two looks agrees
    assert {k: board[k] for k in ("hostname", "cpu", "cores", "arch", "os", "python", "numpy")} == \
        {k: here[k] for k in ("hostname", "cpu", "cores", "arch", "os", "python", "numpy")}
    assert list(sshd["board_tmp"].iterdir()) == []  # leaving the with-block closed it
