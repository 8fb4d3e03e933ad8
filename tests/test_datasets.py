"""Dataset loaders on small datasets written in their real on-disk formats; every malformed input is one ConfigError."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from nas_rl.config import build
from nas_rl.data.datasets import (
    load_cifar10,
    load_digits,
    load_image_folder,
    load_npz,
    read_cifar10,
)
from nas_rl.errors import ConfigError
from tests.helpers.cli import run_cli
from tests.helpers.data import write_cifar10, write_image_folder
from tests.helpers.tiny import TINY_OVERRIDES


def test_cifar10_loads_splits_and_normalises(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "cifar-10-batches-py")
    data = load_cifar10(tmp_path, resolution=16, val_fraction=0.2, seed=0)  # the parent folder also works
    assert data.x_train.shape == (80, 3, 16, 16) and data.x_val.shape == (20, 3, 16, 16)
    assert data.x_train.dtype == np.float32 and data.num_classes == 10 and data.in_channels == 3
    assert np.bincount(data.y_val, minlength=10).tolist() == [2] * 10  # stratified
    assert np.allclose(data.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    assert np.allclose(data.x_train.std(axis=(0, 2, 3)), 1, atol=1e-3)
    again = load_cifar10(tmp_path / "cifar-10-batches-py", resolution=16, seed=0)
    assert np.array_equal(again.x_val, data.x_val) and again.fingerprint() == data.fingerprint()
    other = load_cifar10(tmp_path, resolution=16, seed=1)
    assert not np.array_equal(other.y_train, data.y_train) or not np.array_equal(other.x_train, data.x_train)
    subset = load_cifar10(tmp_path, resolution=16, max_samples=50)
    assert len(subset.y_train) + len(subset.y_val) == 50 and subset.fingerprint()["max_samples"] == 50
    test_x, test_y = read_cifar10(tmp_path, "test")
    assert test_x.shape == (20, 3, 32, 32) and test_y.dtype == np.int64


def test_cifar10_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dataset.root is not set"):
        load_cifar10(None)
    with pytest.raises(ConfigError, match="no such directory"):
        load_cifar10(tmp_path / "nowhere")
    folder = write_cifar10(tmp_path / "c")
    os.remove(folder / "data_batch_3")
    with pytest.raises(ConfigError, match="data_batch_3: no such file"):
        load_cifar10(folder)
    write_cifar10(folder)
    (folder / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match="data_batch_2: not a CIFAR-10 python batch"):
        load_cifar10(folder)
    write_cifar10(folder)
    with open(folder / "data_batch_1", "wb") as handle:
        pickle.dump({b"data": np.zeros((4, 1024), np.uint8), b"labels": [0, 1, 2, 3]}, handle)
    with pytest.raises(ConfigError, match=r"data_batch_1: b\"data\" is uint8 \(4, 1024\); expected uint8 of shape"):
        load_cifar10(folder)
    with open(folder / "data_batch_1", "wb") as handle:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, handle)
    with pytest.raises(ConfigError, match=r"data_batch_1: b\"labels\" holds labels 0..10; expected 0..9"):
        load_cifar10(folder)
    with open(folder / "data_batch_1", "wb") as handle:
        pickle.dump(Path("x"), handle)  # anything but numpy arrays is refused before it is built
    with pytest.raises(ConfigError, match="refusing to load pathlib"):
        load_cifar10(folder)


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_npz_reads_either_layout_the_same(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, size=(40, 12, 12, 3), dtype=np.uint8)
    y = np.arange(40) % 4
    x = nhwc if layout == "nhwc" else nhwc.transpose(0, 3, 1, 2)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = load_npz(tmp_path / "d.npz", num_classes=4, in_channels=3, resolution=8)
    reference = load_npz(tmp_path / "d.npz", num_classes=4, in_channels=3, layout=layout, resolution=8)
    assert data.x_train.shape == (32, 3, 8, 8) and data.num_classes == 4
    assert np.array_equal(data.x_train, reference.x_train)
    np.savez(tmp_path / "nchw.npz", x=nhwc.transpose(0, 3, 1, 2), y=y)
    from_nchw = load_npz(tmp_path / "nchw.npz", 4, resolution=8)
    assert data.fingerprint()["data_digest"] == from_nchw.fingerprint()["data_digest"]


def test_npz_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    x, y = np.zeros((20, 8, 8, 1), np.float32), np.arange(20) % 2
    cases = [
        (dict(x=x, y=y), {"num_classes": None, "in_channels": 1}, r"^(dataset\.)?num_classes=None is not accepted"),
        (dict(x=x), {"num_classes": 2, "in_channels": 1}, r"no array\(s\) y"),
        (dict(x=x.astype(np.int32), y=y), {"num_classes": 2, "in_channels": 1}, "x has dtype int32; expected uint8"),
        (dict(x=x[..., 0, 0], y=y), {"num_classes": 2, "in_channels": 1}, r"x has shape \(20, 8\); expected"),
        (dict(x=x, y=y + 1), {"num_classes": 2, "in_channels": 1}, "holds labels 1..2; expected 0..1"),
        (dict(x=x, y=y.astype(np.float32)), {"num_classes": 2, "in_channels": 1}, "y has dtype float32"),
        (dict(x=x, y=y[:10]), {"num_classes": 2, "in_channels": 1}, "10 labels for 20 images"),
        (dict(x=x, y=y), {"num_classes": 2, "in_channels": 3}, "neither axis 1 and axis 3"),
        (dict(x=np.zeros((20, 3, 8, 3), np.uint8), y=y), {"num_classes": 2, "in_channels": 3}, "set dataset.layout"),
        (dict(x=np.full_like(x, np.nan), y=y), {"num_classes": 2, "in_channels": 1}, "NaN or infinite"),
    ]
    for arrays, settings, message in cases:
        np.savez(path, **arrays)
        with pytest.raises(ConfigError, match=message):
            load_npz(path, resolution=8, **settings)
    with pytest.raises(ConfigError, match="dataset.path=.*missing.npz: no such file"):
        load_npz(tmp_path / "missing.npz", num_classes=2)
    (tmp_path / "junk.npz").write_text("junk")
    with pytest.raises(ConfigError, match="junk.npz: not a readable .npz archive"):
        load_npz(tmp_path / "junk.npz", num_classes=2)


def test_image_folder_reads_classes_in_sorted_order(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "imgs", {"cat": 6, "ant": 5, "bee": 5})
    (root / "cat" / "notes.txt").write_text("not an image, skipped")
    data = load_image_folder(root, num_classes=3, in_channels=3, resolution=8, val_fraction=0.25)
    assert data.x_train.shape[1:] == (3, 8, 8) and len(data.y_train) + len(data.y_val) == 16
    assert np.bincount(np.concatenate([data.y_train, data.y_val])).tolist() == [5, 5, 6]  # ant, bee, cat
    grey = load_image_folder(root, num_classes=3, in_channels=1, resolution=8, val_fraction=0.25)
    assert grey.in_channels == 1 and grey.fingerprint()["classes"] == ["ant", "bee", "cat"]


def test_image_folder_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "imgs", {"a": 3, "b": 3})
    with pytest.raises(ConfigError, match=r"2 class folder\(s\) \(a, b\) but dataset.num_classes=3"):
        load_image_folder(root, num_classes=3, resolution=8)
    (root / "c").mkdir()
    with pytest.raises(ConfigError, match="imgs/c: empty class folder"):
        load_image_folder(root, num_classes=3, resolution=8)
    (root / "c" / "broken.png").write_bytes(b"\x89PNG garbage")
    (root / "c" / "fine.png").write_bytes((root / "a" / "0.png").read_bytes())
    with pytest.raises(ConfigError, match="broken.png: not a readable image"):
        load_image_folder(root, num_classes=3, resolution=8)
    with pytest.raises(ConfigError, match="no such directory"):
        load_image_folder(tmp_path / "nowhere", num_classes=2)


def test_digits_fingerprint_is_unchanged_and_max_samples_subsets() -> None:
    data = load_digits(resolution=8)
    assert data.fingerprint() == {"dataset": "digits", "resolution": 8, "val_fraction": 0.2, "seed": 0}
    small = load_digits(resolution=8, max_samples=200)
    assert len(small.y_train) + len(small.y_val) == 200 and set(small.y_val) == set(range(10))
    with pytest.raises(ConfigError, match=r"^max_samples=1 is not accepted"):
        load_digits(resolution=8, max_samples=1)


def test_dataset_configs_size_the_search_space(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "cifar")
    np.savez(tmp_path / "d.npz", x=np.zeros((40, 8, 8), np.float32), y=np.arange(40) % 5)
    cases = {
        "cifar10": ([f"dataset.root={tmp_path / 'cifar'}"], 3, 10),
        "npz": ([f"dataset.path={tmp_path / 'd.npz'}", "dataset.num_classes=5", "dataset.in_channels=1"], 1, 5),
    }
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        for name, (overrides, channels, classes) in cases.items():
            cfg = compose("config", overrides=[f"dataset={name}", "search_space.resolution=8", *overrides])
            assert (cfg.search_space.in_channels, cfg.search_space.num_classes) == (channels, classes)
            data = build(cfg.dataset, "dataset")
            assert (data.in_channels, data.num_classes, data.resolution) == (channels, classes, 8)
        cfg = compose("config", overrides=["dataset=image_folder", f"dataset.root={tmp_path}", "dataset.num_classes=2"])
        with pytest.raises(ConfigError, match="class folder"):
            build(cfg.dataset, "dataset")
        cfg = compose("config", overrides=["dataset=digits", "dataset.max_samples=500", "search_space.resolution=8"])
        data = build(cfg.dataset, "dataset")  # every loader's config has max_samples: no + needed
        assert len(data.y_train) + len(data.y_val) == 500 and data.fingerprint()["max_samples"] == 500


@pytest.mark.slow  # a subprocess run of the entry point
@pytest.mark.parametrize("case", ["missing_npz", "empty_class_folder"])
def test_bad_dataset_on_the_command_line_is_one_line_and_exit_code_2(case: str, tmp_path: Path) -> None:
    """The real `nas-rl` entry point: the loader's error reaches the user as one line, nothing is trained."""
    if case == "missing_npz":
        missing = tmp_path / "missing.npz"
        overrides = ["dataset=npz", f"dataset.path={missing}", "dataset.num_classes=2", "dataset.in_channels=1"]
        named = f"dataset.path={missing}: no such file"
    else:
        root = write_image_folder(tmp_path / "imgs", {"a": 3, "b": 3})
        (root / "c").mkdir()
        overrides = ["dataset=image_folder", f"dataset.root={root}", "dataset.num_classes=3"]
        named = f"{root / 'c'}: empty class folder"
    run_dir = tmp_path / "run"
    result = run_cli([*TINY_OVERRIDES, *overrides, f"hydra.run.dir={run_dir}"], tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nas-rl: error: ") and named in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (run_dir / "best.json").exists()
