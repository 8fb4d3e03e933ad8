"""Exports of the best network: checkpoint, ONNX and TFLite carry the same weights and give the same logits."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nas_rl.accuracy.checkpoint import load_checkpoint
from nas_rl.arch import ArchSpec
from nas_rl.errors import EvaluationFailed
from nas_rl.models.torch_builder import build_torch_model
from nas_rl.runs import export
from nas_rl.runs.export import (
    ExportMismatch,
    check_logits,
    export_best,
    onnx_logits,
    tflite_logits,
)
from tests.helpers.export import perturbed
from tests.helpers.tiny import TINY_OVERRIDES

TINY_ARCH = "ds_r1_k3_s1_c8:ir_r1_k3_s2_e3_c16_se0.25"
RESOLUTION = 16


def tiny_arch() -> ArchSpec:
    return ArchSpec.from_string(TINY_ARCH, stem_channels=8, head_channels=32, num_classes=10, in_channels=1)


def trained_like_model(arch: ArchSpec, seed: int = 0) -> torch.nn.Module:
    """A network whose BatchNorm statistics and affine parameters are not the identity, as after training
    (so the converters' BN folding is exercised), in eval mode."""
    torch.manual_seed(seed)
    model = build_torch_model(arch)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()


Exported = tuple[torch.nn.Module, dict, Path]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((10, 1, RESOLUTION, RESOLUTION)).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, images: np.ndarray) -> Exported:
    arch = tiny_arch()
    model = trained_like_model(arch)
    run_dir = tmp_path_factory.mktemp("run")
    result = export_best(arch, model, images, run_dir, RESOLUTION, metadata={"accuracy": 0.5})
    return model, result, run_dir


@pytest.mark.slow  # the exported fixture converts to TFLite
def test_export_writes_three_files_within_tolerance(exported: Exported) -> None:
    _, result, run_dir = exported
    for fmt, name in (("checkpoint", "best.pt"), ("onnx", "best.onnx"), ("tflite", "best.tflite")):
        assert Path(result[fmt]) == run_dir / name and (run_dir / name).stat().st_size > 0
        assert 0 <= result["max_abs_diff"][fmt] <= result["atol"]
    assert result["validation_images"] == 8 and result["resolution"] == RESOLUTION and result["onnx_opset"] >= 13


@pytest.mark.slow  # the exported fixture converts to TFLite
def test_checkpoint_reloads_to_the_same_logits(exported: Exported, images: np.ndarray) -> None:
    model, result, _ = exported
    checkpoint = load_checkpoint(result["checkpoint"])
    assert checkpoint.arch == tiny_arch()
    assert checkpoint.metadata == {"resolution": RESOLUTION, "accuracy": 0.5}
    with torch.no_grad():
        assert torch.equal(checkpoint.build_model()(torch.from_numpy(images)), model(torch.from_numpy(images)))


@pytest.mark.slow  # the exported fixture converts to TFLite
def test_onnx_runs_in_onnxruntime_at_any_batch(exported: Exported, images: np.ndarray) -> None:
    model, result, _ = exported
    for batch in (images[:1], images):  # the batch axis is dynamic
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).numpy()
        np.testing.assert_allclose(onnx_logits(result["onnx"], batch), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow  # the exported fixture converts to TFLite
def test_tflite_runs_in_litert(exported: Exported, images: np.ndarray) -> None:
    model, result, _ = exported
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(tflite_logits(result["tflite"], images), expected, atol=1e-4, rtol=1e-4)


def test_onnx_with_other_weights_raises_mismatch(
    tmp_path: Path, images: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = export.export_onnx
    monkeypatch.setattr(export, "export_onnx", lambda model, *args: original(perturbed(model), *args))
    arch = tiny_arch()
    with pytest.raises(ExportMismatch, match="onnx export does not match") as caught:
        export_best(arch, trained_like_model(arch), images, tmp_path, RESOLUTION)
    assert caught.value.format == "onnx" and caught.value.max_abs_diff == pytest.approx(0.5, abs=1e-3)
    assert isinstance(caught.value, EvaluationFailed)  # a search that catches failures catches this too
    assert not (tmp_path / "best.tflite").exists()  # stops at the first mismatching format


@pytest.mark.slow  # a TFLite conversion
def test_tflite_with_other_weights_raises_mismatch(
    tmp_path: Path, images: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = export.export_tflite
    monkeypatch.setattr(export, "export_tflite", lambda arch, model, *args: original(arch, perturbed(model), *args))
    arch = tiny_arch()
    with pytest.raises(ExportMismatch, match=r"tflite export does not match.*0\.5") as caught:
        export_best(arch, trained_like_model(arch), images, tmp_path, RESOLUTION)
    assert caught.value.format == "tflite"


def test_check_logits_tolerance_shape_and_nan() -> None:
    reference = np.array([[1.0, -2.0, 100.0]])
    assert check_logits("onnx", reference, reference + 5e-4, atol=1e-3, rtol=0) == pytest.approx(5e-4)
    assert check_logits("onnx", reference, reference * (1 + 5e-4), atol=0, rtol=1e-3) == pytest.approx(0.05, rel=1e-3)
    with pytest.raises(ExportMismatch, match="max abs logit difference 0.002"):
        check_logits("onnx", reference, reference + 2e-3, atol=1e-3, rtol=0)
    with pytest.raises(ExportMismatch):
        check_logits("tflite", reference, np.full_like(reference, np.nan), atol=1e-3, rtol=1e-3)
    with pytest.raises(EvaluationFailed, match="shape"):
        check_logits("tflite", reference, reference[:, :2], atol=1e-3, rtol=1e-3)


def test_images_of_the_wrong_shape_are_refused(tmp_path: Path, images: np.ndarray) -> None:
    arch = tiny_arch()
    with pytest.raises(ValueError, match=r"accepted: NCHW \(N>0, 1, 32, 32\)"):
        export_best(arch, trained_like_model(arch), images, tmp_path, resolution=32)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------- the export of a search


@pytest.mark.slow  # proxy training and a TFLite conversion
def test_export_of_a_search_is_the_network_proxy_training_trained(tmp_path: Path) -> None:
    """accuracy.width_multiplier=0.5 at a proxy resolution of 12: the exported files are that half-width network
    at 12x12, with the weights it was scored with, checked on the validation split at 12x12."""
    from nas_rl.accuracy.proxy import ProxyTraining, scale_width
    from nas_rl.data.datasets import load_digits
    from nas_rl.envs.nas_env import NasEnv
    from nas_rl.evaluation.evaluator import Evaluator
    from nas_rl.evaluation.reward import MnasReward
    from nas_rl.evaluation.store import EvaluationStore
    from nas_rl.runs.search import SearchResult, export_best_architecture
    from tests.helpers.doubles import ChannelLatencyDouble
    from tests.helpers.tiny import tiny_space

    space = tiny_space()
    proxy = ProxyTraining(load_digits(resolution=16), epochs=0.1, threads=1, resolution=12, width_multiplier=0.5)
    env = NasEnv(space, Evaluator(proxy, ChannelLatencyDouble(), MnasReward(1.0), EvaluationStore(":memory:")))
    arch = space.sample_arch(np.random.default_rng(0))
    result = SearchResult(tmp_path, [], {"arch": arch.to_string()})
    (tmp_path / "best.json").write_text("{}")

    outcome = export_best_architecture(env, result)
    assert "error" not in outcome, outcome["error"]
    trained = scale_width(arch, 0.5)
    assert trained.stages[0].out_channels < arch.stages[0].out_channels  # really a narrower network
    checkpoint = load_checkpoint(outcome["checkpoint"])
    assert (checkpoint.arch, checkpoint.metadata["resolution"], outcome["resolution"]) == (trained, 12, 12)
    assert (outcome["arch"], outcome["searched_arch"], outcome["width_multiplier"]) == (
        trained.to_string(), arch.to_string(), 0.5
    )
    assert outcome["retrained_accuracy"] == proxy.evaluate(checkpoint.build_model())  # the weights it was scored with
    assert max(outcome["max_abs_diff"].values()) <= outcome["atol"]


@pytest.mark.slow  # a subprocess run of the entry point
def test_a_search_whose_export_mismatches_keeps_its_outputs_and_fails(tmp_path: Path) -> None:
    """nas-rl with a broken ONNX exporter (a test double injected into the real process): every other output is
    written, the summary shows the failure, and the process ends with one line on stderr and exit code 1."""
    run_dir = tmp_path / "run"
    args = [*(o for o in TINY_OVERRIDES if not o.startswith("latency.")), "latency=flops", "latency.ms_per_mac=1e-6",
            "controller=random", "search.budget=2", "search.progress=false", f"hydra.run.dir={run_dir}"]  # fmt: skip
    code = (
        "import sys; from nas_rl.runs import export; from tests.helpers.export import perturbed; "
        "original = export.export_onnx; "
        "export.export_onnx = lambda model, *args: original(perturbed(model), *args); "
        f"sys.argv = ['nas-rl', *{args!r}]; "
        "from nas_rl.cli import search_main; search_main()"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("nas-rl: error: the export of the best architecture failed: onnx export does not")
    assert str(run_dir) in lines[0]
    assert re.search(r"export\W+FAILED: onnx export does not match", result.stdout), result.stdout
    for name in ("config.yaml", "evaluations.csv", "best.json", "pareto.csv", "pareto.png", "progress.png"):
        assert (run_dir / name).is_file(), name
    best = json.loads((run_dir / "best.json").read_text())
    assert best["evaluations"] == 2 and "onnx export does not match" in best["export"]["error"]
