"""Image classification data for proxy training, held in memory as normalised NCHW float32 arrays.

Every loader returns a :class:`SplitDataset`: an optional stratified subset (``max_samples``), a stratified,
seeded train/validation split, resized to the requested resolution, normalised with statistics of the
training split only. Loaders check what they read (paths, shapes, dtypes, label ranges, class folders)
and raise :class:`~nas_rl.errors.ConfigError` naming the file and what was expected, before any training.

Loaders: :func:`load_digits` (scikit-learn's bundled digits), :func:`load_cifar10` (the python-version
batches on disk), :func:`load_npz` (arrays ``x``, ``y`` in one ``.npz`` file), :func:`load_image_folder`
(one sub-folder per class, read with PIL).

A dataset read from disk is identified in the store's fingerprint by a digest of the data actually used,
not by its path: moving the files keeps cached evaluations, changing their content does not reuse them.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas_rl.errors import ConfigError

CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
#: File name endings read as images by :func:`load_image_folder` (others, and hidden files, are skipped).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass
class SplitDataset:
    """Train and validation arrays (NCHW float32, int64 labels) and what identifies them."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def resolution(self) -> int:
        return int(self.x_train.shape[2])

    def fingerprint(self) -> dict[str, Any]:
        return {"dataset": self.name, **self.settings}


def calibration_images(dataset: SplitDataset, resolution: int | None, count: int, seed: int) -> np.ndarray:
    """``count`` seeded training images, NHWC float32, resized (bilinear) to ``resolution``: int8 calibration data."""
    import torch  # here, not at the top: a config check that only inspects a loader's settings stays light
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(dataset.x_train), size=min(count, len(dataset.x_train)), replace=False))
    images = torch.from_numpy(dataset.x_train[pick])
    if resolution is not None and tuple(images.shape[2:]) != (resolution, resolution):
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return images.permute(0, 2, 3, 1).contiguous().numpy()


def stratified_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded split that keeps every class's share in both parts."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction={val_fraction} is not accepted: use a number in (0, 1)")
    from sklearn.model_selection import train_test_split

    try:
        train, val = train_test_split(np.arange(len(y)), test_size=val_fraction, stratify=y, random_state=seed)
    except ValueError as error:  # a class with one image, or fewer validation images than classes
        raise ConfigError(
            f"cannot split {len(y)} images of {len(np.unique(y))} classes with dataset.val_fraction={val_fraction}: "
            f"{error} (every class needs >= 2 images and both parts >= one image per class)"
        ) from None
    return np.sort(train), np.sort(val)


def stratified_subset(y: np.ndarray, max_samples: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded, class-balanced subset of at most ``max_samples`` images (all when None)."""
    if max_samples is None or max_samples >= len(y):
        return np.arange(len(y))
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 2:
        raise ConfigError(f"max_samples={max_samples!r} is not accepted: use an integer >= 2 or null (all)")
    from sklearn.model_selection import train_test_split

    try:
        keep, _ = train_test_split(np.arange(len(y)), train_size=max_samples, stratify=y, random_state=seed)
    except ValueError as error:
        classes = len(np.unique(y))
        raise ConfigError(f"max_samples={max_samples} is too small for {classes} classes: {error}") from None
    return np.sort(keep)


def prepare(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    resolution: int,
    val_fraction: float,
    seed: int,
    settings: dict[str, Any],
    max_samples: int | None = None,
) -> SplitDataset:
    """Subset, split, resize (bilinear) and normalise NCHW ``images`` with per-channel train statistics.

    ``images`` may be uint8 (scaled to [0, 1]) or float; only the subset's images are converted to float.
    """
    import torch
    import torch.nn.functional as F

    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ConfigError(f"resolution={resolution!r} is not accepted: use a positive integer")
    keep = stratified_subset(labels, max_samples, seed)
    images, labels = images[keep], labels[keep]
    train_idx, val_idx = stratified_split(labels, val_fraction, seed)
    scale = 1.0 / 255.0 if images.dtype == np.uint8 else 1.0
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if scale != 1.0:
        x.mul_(scale)
    if x.shape[-2:] != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    pixels = x.numpy()
    x_train, x_val = pixels[train_idx], pixels[val_idx]
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    extra = {} if max_samples is None else {"max_samples": max_samples}
    return SplitDataset(
        name=name,
        x_train=np.ascontiguousarray((x_train - mean) / std, dtype=np.float32),
        y_train=labels[train_idx].astype(np.int64),
        x_val=np.ascontiguousarray((x_val - mean) / std, dtype=np.float32),
        y_val=labels[val_idx].astype(np.int64),
        num_classes=num_classes,
        settings={**settings, **extra, "resolution": resolution, "val_fraction": val_fraction, "seed": seed},
    )


def load_digits(
    resolution: int = 32, val_fraction: float = 0.2, seed: int = 0, max_samples: int | None = None
) -> SplitDataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), upsampled to ``resolution``."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = bunch.images.astype(np.float32)[:, None, :, :] / 16.0
    return prepare("digits", images, bunch.target, 10, resolution, val_fraction, seed, {}, max_samples)


# --- CIFAR-10 -------------------------------------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches' dicts of numpy arrays and nothing else (a pickle can run any code)."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds only numpy arrays")
        return super().find_class(module, name)


def cifar10_folder(root: str | Path | None) -> Path:
    """The folder holding the CIFAR-10 python batches: ``root`` itself or its ``cifar-10-batches-py``."""
    if root is None or str(root).strip() in ("", "???"):
        raise ConfigError(
            "dataset.root is not set: pass dataset.root=DIR, the folder with CIFAR-10's python batches "
            "(data_batch_1..5, test_batch; the cifar-10-batches-py folder of cifar-10-python.tar.gz)"
        )
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"dataset.root={root}: no such directory; expected the folder with data_batch_1..5 and test_batch"
        )
    if not (folder / CIFAR10_TRAIN_BATCHES[0]).exists() and (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    return folder


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One python-version batch: ``b"data"`` uint8 (N, 3072) and ``b"labels"`` (N ints in 0..9) -> NCHW, labels."""
    expected = 'a pickled dict with b"data" (uint8, shape (N, 3072)) and b"labels" (N integers in 0..9)'
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; a CIFAR-10 python batch is {expected}")
    try:
        with open(path, "rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="bytes").load()
    except Exception as error:  # noqa: BLE001  (any unreadable file is the same user error)
        raise ConfigError(
            f"{path}: not a CIFAR-10 python batch ({type(error).__name__}: {error}); expected {expected}"
        ) from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ConfigError(f"{path}: found {keys}; expected {expected}")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        seen = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ConfigError(f'{path}: b"data" is {seen}; expected uint8 of shape (N, 3072)')
    _check_labels(labels, len(data), 10, f'{path}: b"labels"')
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_cifar10(root: str | Path | None, part: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Raw uint8 NCHW images and labels of the 50,000 training (``part="train"``) or 10,000 test images."""
    if part not in ("train", "test"):
        raise ValueError(f"part={part!r}: use 'train' or 'test'")
    folder = cifar10_folder(root)
    names = CIFAR10_TRAIN_BATCHES if part == "train" else (CIFAR10_TEST_BATCH,)
    batches = [read_cifar10_batch(folder / name) for name in names]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def load_cifar10(
    root: str | Path | None = None,
    resolution: int = 32,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_samples: int | None = None,
) -> SplitDataset:
    """CIFAR-10 from its python-version batches on disk (no download).

    The search's train/validation split is drawn from the 50,000 images of ``data_batch_1..5``; ``test_batch``
    stays held out for the final model (:func:`read_cifar10` with ``part="test"``).

    :param root: folder with ``data_batch_1..5`` and ``test_batch`` (or its parent).
    :param max_samples: a stratified, seeded subset of that many images (before the split); None = all.
        Keeps a search on CIFAR affordable: 5,000 images at 32x32 is about 60 MB in memory.
    """
    images, labels = read_cifar10(root, "train")
    settings = {"data_digest": data_digest(images, labels)}
    return prepare("cifar10", images, labels, 10, resolution, val_fraction, seed, settings, max_samples)


# --- NumPy archives -------------------------------------------------------------------------------------


def load_npz(
    path: str | Path | None = None,
    num_classes: int | None = None,
    in_channels: int = 3,
    layout: str = "auto",
    resolution: int = 32,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_samples: int | None = None,
) -> SplitDataset:
    """Images ``x`` and labels ``y`` from one ``.npz`` file.

    ``x``: uint8 (scaled to [0, 1]) or float, shape (N, H, W, C), (N, C, H, W) or (N, H, W) (one channel);
    ``y``: integers in ``0 .. num_classes - 1``, shape (N,).

    :param num_classes: classes of the task (the classifier's outputs); labels must lie below it.
    :param in_channels: image channels the data must have (the search space's ``in_channels``).
    :param layout: ``nhwc``, ``nchw`` or ``auto`` (the axis of size ``in_channels``; ambiguous shapes raise).
    """
    source = _existing_file(path, "dataset.path", "an .npz file with arrays x (images) and y (labels)")
    num_classes = _check_num_classes(num_classes, source)
    try:
        with np.load(source, allow_pickle=False) as archive:
            missing = [key for key in ("x", "y") if key not in archive.files]
            if missing:
                raise ConfigError(
                    f"{source}: no array(s) {', '.join(missing)} (found {archive.files}); expected x (images) and "
                    "y (labels)"
                )
            x, y = archive["x"], archive["y"]
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001
        raise ConfigError(f"{source}: not a readable .npz archive ({type(error).__name__}: {error})") from None
    x = _to_nchw(x, in_channels, layout, source)
    _check_labels(y, len(x), num_classes, f"{source}: y")
    settings = {"data_digest": data_digest(x, y), "num_classes": num_classes}
    return prepare("npz", x, y, num_classes, resolution, val_fraction, seed, settings, max_samples)


def _to_nchw(x: np.ndarray, in_channels: int, layout: str, source: Path) -> np.ndarray:
    if layout not in ("auto", "nhwc", "nchw"):
        raise ConfigError(f"layout={layout!r} is not accepted: use auto, nhwc or nchw")
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise ConfigError(f"{source}: x has dtype {x.dtype}; expected uint8 (0..255) or a float type")
    if x.ndim == 3 and in_channels == 1:
        x = x[:, None]
        layout = "nchw"
    if x.ndim != 4 or len(x) == 0:
        raise ConfigError(
            f"{source}: x has shape {x.shape}; expected (N, H, W, C) or (N, C, H, W) with C = dataset.in_channels = "
            f"{in_channels} (or (N, H, W) for one channel)"
        )
    if layout == "auto":
        first, last = x.shape[1] == in_channels, x.shape[3] == in_channels
        if first == last:
            what = "both" if first else "neither"
            raise ConfigError(
                f"{source}: x has shape {x.shape}, {what} axis 1 and axis 3 have dataset.in_channels={in_channels} "
                "entries; set dataset.layout=nhwc or nchw (or dataset.in_channels to the images' channels)"
            )
        layout = "nchw" if first else "nhwc"
    if layout == "nhwc":
        x = x.transpose(0, 3, 1, 2)
    if x.shape[1] != in_channels:
        raise ConfigError(f"{source}: x in layout {layout} has {x.shape[1]} channels; dataset.in_channels={in_channels}")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise ConfigError(f"{source}: x holds NaN or infinite values")
    return x


# --- Image folders --------------------------------------------------------------------------------------


def load_image_folder(
    root: str | Path | None = None,
    num_classes: int | None = None,
    in_channels: int = 3,
    resolution: int = 32,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_samples: int | None = None,
) -> SplitDataset:
    """One sub-folder per class (``root/<class>/<image>``), classes numbered in sorted folder-name order.

    Images are read with PIL, converted to RGB (``in_channels=3``) or greyscale (1) and resized (bilinear)
    to ``resolution`` x ``resolution`` as they are read, so the images may have any size.

    :param num_classes: the number of class folders, as the search space needs it before the data is read.
    """
    if root is None or str(root).strip() in ("", "???"):
        raise ConfigError(
            "dataset.root is not set: pass dataset.root=DIR, a folder with one sub-folder of images per class"
        )
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"dataset.root={root}: no such directory; expected one sub-folder of images per class")
    if in_channels not in (1, 3):
        raise ConfigError(
            f"in_channels={in_channels!r} is not accepted for image folders: use 1 (greyscale) or 3 (RGB)"
        )
    num_classes = _check_num_classes(num_classes, folder)
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    images_of = {c: sorted(p for p in c.iterdir() if p.is_file() and _is_image_name(p.name)) for c in classes}
    expected = f"expected one sub-folder of images per class, {folder}/<class>/<image> ({', '.join(IMAGE_EXTENSIONS)})"
    if not any(images_of.values()):
        raise ConfigError(f"dataset.root={root}: {_no_classes(folder, classes)}; {expected}")
    if len(classes) != num_classes:
        names = ", ".join(p.name for p in classes[:12]) + (", ..." if len(classes) > 12 else "")
        raise ConfigError(
            f"{folder}: {len(classes)} class folder(s) ({names}) but dataset.num_classes={num_classes}: "
            f"set dataset.num_classes={len(classes)}"
        )
    files, labels = [], []
    for label, class_folder in enumerate(classes):
        images = images_of[class_folder]
        if not images:
            raise ConfigError(f"{class_folder}: empty class folder; expected image files ({', '.join(IMAGE_EXTENSIONS)})")
        files += images
        labels += [label] * len(images)
    y = np.asarray(labels, dtype=np.int64)
    keep = stratified_subset(y, max_samples, seed)
    x = np.stack([_read_image(files[i], in_channels, resolution) for i in keep])  # only the subset is read
    y = y[keep]
    settings = {"data_digest": data_digest(x, y), "num_classes": num_classes, "classes": [p.name for p in classes]}
    if max_samples is not None:
        settings["max_samples"] = max_samples
    return prepare("image_folder", x, y, num_classes, resolution, val_fraction, seed, settings)


def _no_classes(folder: Path, classes: list[Path]) -> str:
    """What ``folder``, which has no class sub-folder holding images, holds instead."""
    if classes:
        names = ", ".join(p.name for p in classes[:12]) + (", ..." if len(classes) > 12 else "")
        return f"{folder} has {len(classes)} sub-folder(s) ({names}) but none is a class folder of image files"
    files = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    if not files:
        return f"{folder} is empty (no class folders)"
    return f"{folder} has no class folders, only {len(files)} file(s) ({', '.join(files[:3])}{', ...' if len(files) > 3 else ''})"


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _read_image(path: Path, in_channels: int, resolution: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            converted = image.convert("L" if in_channels == 1 else "RGB")
            if converted.size != (resolution, resolution):
                converted = converted.resize((resolution, resolution), Image.Resampling.BILINEAR)
            pixels = np.asarray(converted, dtype=np.uint8)
    except Exception as error:  # noqa: BLE001
        raise ConfigError(f"{path}: not a readable image ({type(error).__name__}: {error})") from None
    return pixels[None] if in_channels == 1 else pixels.transpose(2, 0, 1)


# --- shared checks --------------------------------------------------------------------------------------


def data_digest(x: np.ndarray, y: np.ndarray) -> str:
    """A short content hash of images and labels: the data's identity in fingerprints."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(str((x.shape, x.dtype.str, y.shape)).encode())
    digest.update(np.ascontiguousarray(x).data)
    digest.update(np.ascontiguousarray(y, dtype=np.int64).data)
    return digest.hexdigest()


def _existing_file(path: str | Path | None, key: str, expected: str) -> Path:
    if path is None or str(path).strip() in ("", "???"):
        raise ConfigError(f"{key} is not set: pass {key}=FILE, {expected}")
    source = Path(path).expanduser()
    if not source.is_file():
        raise ConfigError(f"{key}={path}: no such file; expected {expected}")
    return source


def _check_num_classes(num_classes: Any, source: Path) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(
            f"num_classes={num_classes!r} is not accepted for {source}: set it to the number of classes "
            "(an integer >= 2); the search space's classifier is sized from it before the data is read"
        )
    return num_classes


def _check_labels(labels: np.ndarray, count: int, num_classes: int, where: str) -> None:
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise ConfigError(
            f"{where} has dtype {labels.dtype} and shape {labels.shape}; expected integers of shape ({count},)"
        )
    if len(labels) != count:
        raise ConfigError(f"{where} has {len(labels)} labels for {count} images; expected one label per image")
    if count and (labels.min() < 0 or labels.max() >= num_classes):
        raise ConfigError(
            f"{where} holds labels {labels.min()}..{labels.max()}; expected 0..{num_classes - 1} "
            f"({num_classes} classes, dataset.num_classes)"
        )
