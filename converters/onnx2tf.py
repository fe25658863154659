"""The ONNX back end: ``torch.onnx.export`` -> ``onnxsim`` -> ``onnx2tf`` (via TensorFlow).

onnx2tf writes NHWC files; ``--layout nchw`` keeps the input as exported (``-kat``). It runs as a
child process in a scratch folder that holds ``calibration_image_sample_data_20x128x128x3_float32.npy``
made from real photos: without that file onnx2tf downloads one from the internet and, offline,
fails. Full int8 is calibrated on the job's images (``-cind``, as the graph takes them); the
``_int8`` file is onnx2tf's ``integer_quant`` output (float I/O) and the uint8/int8 interfaces come
from TFLite's model-interface modifier, as on the litert back end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from edgecnn.converters.base import ConvertJob, Converted, Converter, Variant, set_int_io, timed
from edgecnn.data.photos import sample_photos
from edgecnn.data.transforms import Preprocess

ONNX_OPSET = 17
INPUT_NAME = "input"
SAMPLE_NPY = "calibration_image_sample_data_20x128x128x3_float32.npy"
# onnx2tf output name suffix for each precision
OUTPUT_SUFFIX = {"float32": "float32", "float16": "float16", "dynamic": "dynamic_range_quant",
                 "int8": "integer_quant"}


def write_sample_npy(folder: Path, fallback: np.ndarray) -> Path:
    """onnx2tf's default calibration sample (20 x 128 x 128 x 3 float32 in [0, 1]) from real photos.

    ``fallback`` (uint8 NHWC images) fills in when no package with photos is installed.
    """
    pp = Preprocess(res=128, mean=(0.0,) * 3, std=(1.0,) * 3)
    photos = sample_photos(20, seed=0)
    if photos:
        pixels = np.stack([pp.to_uint8(im) for im in photos])
    else:
        idx = np.linspace(0, fallback.shape[1] - 1, 128).round().astype(int)
        pixels = np.resize(fallback[:, idx][:, :, idx], (20, 128, 128, fallback.shape[3]))
        pixels = np.repeat(pixels, 3, axis=3) if pixels.shape[3] == 1 else pixels
    path = folder / SAMPLE_NPY
    np.save(path, (pixels.astype(np.float32) / 255.0)[..., :3])
    return path


def export_onnx(module: nn.Module, sample: torch.Tensor, path: Path) -> bytes:
    """ONNX of ``module`` at batch 1, simplified with onnxsim; returns the file's bytes."""
    import onnx
    import onnxsim

    torch.onnx.export(module, (sample,), str(path), input_names=[INPUT_NAME], output_names=["logits"],
                      opset_version=ONNX_OPSET, dynamo=False)
    simplified, ok = onnxsim.simplify(onnx.load(str(path)))
    if ok:
        onnx.save(simplified, str(path))
    return path.read_bytes()


def run_onnx2tf(onnx_path: Path, out_dir: Path, job: ConvertJob, *, dynamic: bool,
                calib: torch.Tensor | None) -> None:
    """One onnx2tf run in ``job.scratch`` (its working directory); raises with the log's last line.

    ``calib``: the calibration batch in the file's layout, as the graph takes it, for full-integer
    quantisation (passed to onnx2tf with mean 0, std 1), or None.
    """
    cmd = [sys.executable, "-m", "onnx2tf", "-i", str(onnx_path), "-o", str(out_dir),
           "-v", "info" if job.verbose else "error"]
    if job.layout == "nchw":
        cmd += ["-kat", INPUT_NAME]
    if dynamic:
        cmd.append("-odrqt")
    if calib is not None:
        npy = out_dir.with_suffix(".calib.npy")
        np.save(npy, calib.numpy().astype(np.float32))
        identity = json.dumps([0.0] * job.preprocess.in_chans), json.dumps([1.0] * job.preprocess.in_chans)
        cmd += ["-oiqt", "-qt", "per-channel", "-cind", INPUT_NAME, str(npy), *identity]
    with open(job.log_path, "ab") as log:
        proc = subprocess.run(cmd, cwd=job.scratch, stdin=subprocess.DEVNULL,
                              stdout=None if job.verbose else log, stderr=sys.stderr if job.verbose else log,
                              env=_quiet_env())
    if proc.returncode != 0:
        text = job.log_path.read_text(errors="replace").strip().splitlines()
        errors = [line for line in text if "error" in line.lower()] or text or ["no output"]
        raise RuntimeError(f"onnx2tf exited with status {proc.returncode}: {errors[-1].strip()}")


def _quiet_env() -> dict[str, str]:
    import os

    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", GLOG_minloglevel="3", CUDA_VISIBLE_DEVICES="-1")


class ONNX2TFConverter(Converter):
    name, other, library = "onnx2tf", "litert", "torch.onnx + onnxsim + onnx2tf"

    def convert(self, job: ConvertJob, wanted: Sequence[Variant]) -> tuple[list[Converted], dict[str, bytes]]:
        write_sample_npy(job.scratch, job.calib_pixels)
        calib = job.inputs()
        onnx_path = job.scratch / "model.onnx"
        with self.stage(job, "exporting to ONNX"):
            onnx_bytes, onnx_s = timed(export_onnx, job.graph(), calib[:1], onnx_path)
        int8 = any(v.precision == "int8" for v in wanted)
        out = job.scratch / "tf"
        with self.stage(job, "converting ONNX with onnx2tf"):
            _, sec = timed(run_onnx2tf, onnx_path, out, job, dynamic=any(v.precision == "dynamic" for v in wanted),
                           calib=job.in_layout(calib) if int8 else None)
            done = [Converted(v, set_int_io((out / f"model_{OUTPUT_SUFFIX[v.precision]}.tflite").read_bytes(),
                                            v.io, job.scratch), onnx_s + sec) for v in wanted]
        return done, {".onnx": onnx_bytes}
