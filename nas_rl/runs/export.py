"""Export the best architecture's trained network as a checkpoint, an ONNX model and a TFLite flatbuffer.

All three files carry the weights of the given (proxy-trained) torch model. Before :func:`export_best`
returns, each file is read back and run on the same validation images in its own runtime (torch, ONNX
Runtime, the LiteRT interpreter); logits that differ from the torch model's beyond the tolerance raise
:class:`ExportMismatch`, so a run never ships a file that computes something else than what was measured.

TensorFlow, Keras and ONNX Runtime are imported inside the functions that need them.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas_rl._util import atomic_write
from nas_rl.accuracy.checkpoint import load_checkpoint, save_checkpoint
from nas_rl.arch import ArchSpec
from nas_rl.errors import EvaluationFailed

#: File names written into the run directory.
CHECKPOINT_NAME, ONNX_NAME, TFLITE_NAME = "best.pt", "best.onnx", "best.tflite"
#: ONNX opset of the exported graph (every op of the builders exists in it).
ONNX_OPSET = 17
#: Validation images run through every format at export.
VALIDATION_IMAGES = 8


class ExportMismatch(EvaluationFailed):
    """An exported file's logits differ from the torch model's beyond the tolerance.

    :param fmt: the format whose outputs differ (``checkpoint``, ``onnx`` or ``tflite``).
    :param max_abs_diff: the largest absolute difference of logits seen.
    """

    def __init__(self, fmt: str, max_abs_diff: float, atol: float, rtol: float) -> None:
        self.format = fmt
        self.max_abs_diff = max_abs_diff
        super().__init__(
            f"{fmt} export does not match the torch model: max abs logit difference {max_abs_diff:.3g} "
            f"exceeds atol={atol:g} + rtol={rtol:g} * |torch logit|"
        )


def export_best(
    arch: ArchSpec,
    model: torch.nn.Module,
    validation_images: np.ndarray,
    run_dir: Path,
    resolution: int,
    atol: float = 1e-3,
    rtol: float = 1e-3,
    num_images: int = VALIDATION_IMAGES,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``best.pt``, ``best.onnx`` and ``best.tflite`` of ``model`` into ``run_dir`` and check them.

    The model is put in eval mode. The first ``num_images`` validation images go through the torch model,
    the reloaded checkpoint, ONNX Runtime (one batch) and the LiteRT interpreter (one image at a time: the
    flatbuffer has batch 1, as latency is measured); logits must agree with torch's within
    ``atol + rtol * |torch logit|`` elementwise.

    :param arch: the architecture ``model`` was built from.
    :param model: the trained network, built by ``build_torch_model(arch)``.
    :param validation_images: NCHW float32 images at ``resolution`` (normalised as in training).
    :param run_dir: the folder the files are written to (created if missing).
    :param resolution: input height = width of the ONNX and TFLite files.
    :param metadata: free-form JSON-like facts stored in the checkpoint (accuracy, dataset, ...).
    :return: the written paths, the tolerances and the max abs logit difference of each format, JSON-ready.
    :raises ExportMismatch: a format's logits differ beyond the tolerance (the file stays for inspection).
    :raises EvaluationFailed: a file could not be written or run; the message is one line.
    :raises ValueError: the images do not fit the architecture and resolution, or ``model`` is not ``arch``'s.
    """
    images = _check_images(validation_images, arch, resolution, num_images)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    with torch.no_grad():
        reference = model(torch.from_numpy(images)).numpy()
    paths = {"checkpoint": run_dir / CHECKPOINT_NAME, "onnx": run_dir / ONNX_NAME, "tflite": run_dir / TFLITE_NAME}
    differences: dict[str, float] = {}

    try:
        with atomic_write(paths["checkpoint"]) as temporary:
            save_checkpoint(temporary, arch, model, {"resolution": int(resolution), **(metadata or {})})
    except OSError as error:
        raise EvaluationFailed(f"writing {paths['checkpoint']} failed: {error.strerror or error}") from None
    with torch.no_grad():
        reloaded = load_checkpoint(paths["checkpoint"]).build_model()(torch.from_numpy(images)).numpy()
    differences["checkpoint"] = check_logits("checkpoint", reference, reloaded, atol, rtol)

    _step("ONNX export", export_onnx, model, images, paths["onnx"])
    outputs = _step("ONNX Runtime", onnx_logits, paths["onnx"], images)
    differences["onnx"] = check_logits("onnx", reference, outputs, atol, rtol)

    _step("TFLite conversion", export_tflite, arch, model, resolution, paths["tflite"])
    outputs = _step("LiteRT", tflite_logits, paths["tflite"], images)
    differences["tflite"] = check_logits("tflite", reference, outputs, atol, rtol)

    return {
        **{fmt: str(path) for fmt, path in paths.items()},
        "resolution": int(resolution),
        "onnx_opset": ONNX_OPSET,
        "validation_images": len(images),
        "atol": float(atol),
        "rtol": float(rtol),
        "max_abs_diff": differences,
    }


def export_onnx(model: torch.nn.Module, images: np.ndarray, path: Path) -> Path:
    """Write ``model`` (eval mode) as ONNX with a dynamic batch: input ``image`` (NCHW), output ``logits``.

    Uses the TorchScript exporter (``dynamo=False``), which needs only the ``onnx`` package. The file is written
    atomically (a reader or a kill never sees half of it).
    """
    example = torch.from_numpy(np.ascontiguousarray(images[:1]))
    with warnings.catch_warnings(), atomic_write(path) as temporary:
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation on every call
        torch.onnx.export(
            model,
            (example,),
            str(temporary),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )
    return Path(path)


def export_tflite(arch: ArchSpec, model: torch.nn.Module, resolution: int, path: Path) -> Path:
    """Write the fp32 TFLite flatbuffer (batch 1, NHWC) of ``arch`` with ``model``'s weights (atomically)."""
    import keras

    from nas_rl.latency.litert import convert_to_tflite
    from nas_rl.models.keras_builder import build_keras_model, copy_torch_weights

    try:
        keras_model = build_keras_model(arch, resolution, batch_size=1)
        copy_torch_weights(model, keras_model)
        flatbuffer = convert_to_tflite(keras_model, "fp32")
        with atomic_write(path) as temporary:
            temporary.write_bytes(flatbuffer)
    finally:
        keras_model = None
        keras.backend.clear_session()  # a long search must not accumulate graphs in Keras' global state
    return Path(path)


def onnx_logits(path: Path, images: np.ndarray) -> np.ndarray:
    """Logits of an ONNX file for NCHW ``images``, run by ONNX Runtime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: np.ascontiguousarray(images, dtype=np.float32)})[0])


def tflite_logits(path: Path, images: np.ndarray) -> np.ndarray:
    """Logits of a TFLite file for NCHW ``images`` (transposed to NHWC), one interpreter call per image."""
    from ai_edge_litert.interpreter import Interpreter

    from nas_rl._util import silenced_output

    with silenced_output():  # the runtime announces its XNNPACK delegate on stderr
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    batch = int(source["shape"][0])
    nhwc = np.ascontiguousarray(images.transpose(0, 2, 3, 1), dtype=np.float32)
    logits = []
    for start in range(0, len(nhwc), batch):
        chunk = nhwc[start : start + batch]
        if len(chunk) < batch:  # a fixed batch > 1: pad the last chunk, drop the padding's logits
            chunk = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), np.float32)])
        interpreter.set_tensor(source["index"], chunk)
        interpreter.invoke()
        logits.append(interpreter.get_tensor(target["index"])[: len(nhwc) - start].copy())
    return np.concatenate(logits)


def check_logits(fmt: str, reference: np.ndarray, outputs: np.ndarray, atol: float, rtol: float) -> float:
    """The max abs difference of ``outputs`` from ``reference``; raises :class:`ExportMismatch` beyond tolerance."""
    outputs = np.asarray(outputs, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if outputs.shape != reference.shape:
        raise EvaluationFailed(f"{fmt} export gives logits of shape {outputs.shape}, torch gives {reference.shape}")
    difference = np.abs(outputs - reference)
    max_abs_diff = float(difference.max()) if difference.size else 0.0
    if not np.isfinite(difference).all() or (difference > atol + rtol * np.abs(reference)).any():
        raise ExportMismatch(fmt, max_abs_diff if np.isfinite(max_abs_diff) else float("inf"), atol, rtol)
    return max_abs_diff


def _check_images(images: np.ndarray, arch: ArchSpec, resolution: int, num_images: int) -> np.ndarray:
    array = np.asarray(images)
    expected = f"(N>0, {arch.in_channels}, {resolution}, {resolution})"
    if array.ndim != 4 or len(array) == 0 or array.shape[1:] != (arch.in_channels, resolution, resolution):
        raise ValueError(f"validation images of shape {array.shape} are not accepted; accepted: NCHW {expected}")
    if num_images < 1:
        raise ValueError(f"num_images={num_images!r} is not accepted: use an integer >= 1")
    return np.ascontiguousarray(array[:num_images], dtype=np.float32)


def _step(what: str, function: Any, *args: Any) -> Any:
    """Run one export step; an unexpected error becomes a one-line :class:`EvaluationFailed` naming the step."""
    try:
        return function(*args)
    except EvaluationFailed:
        raise
    except Exception as error:  # noqa: BLE001  (any failure of a third-party exporter/runtime is the same outcome)
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        raise EvaluationFailed(f"{what} failed: {reason}") from error


__all__ = [
    "ExportMismatch",
    "check_logits",
    "export_best",
    "export_onnx",
    "export_tflite",
    "onnx_logits",
    "tflite_logits",
]
