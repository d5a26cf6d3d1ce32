"""bnlab.train: determinism, divergence handling, what is recorded and when, threads and RNG restored."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnlab.data import Dataset, load_mnist_subset, synthetic_data
from bnlab.models import build_cnn, build_mlp
from bnlab.train import TrainConfig, TrainResult, evaluate, train

ARRAY_FIELDS = ("steps", "train_loss", "train_loss_avg", "test_loss", "test_accuracy", "percentiles",
                "unit_percentiles", "grad_norms", "weight_norms")
FAST = TrainConfig(steps=40, batch_size=32, lr=0.1, record_every=10, progress=False)


@pytest.fixture(scope="module")
def vectors() -> Dataset:
    return synthetic_data(num_train=256, num_test=128, num_classes=4, num_features=20, seed=0)


def mlp(seed: int = 0, **kwargs) -> nn.Module:
    return build_mlp(20, 4, **{"depth": 3, "width": 16, "norm": "batch", **kwargs}, seed=seed)


def assert_identical(a: TrainResult, b: TrainResult) -> None:
    for name in ARRAY_FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


# ----------------------------------------------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_same_seed_gives_bit_identical_records(vectors: Dataset, norm: str) -> None:
    config = replace(FAST, momentum=0.9, weight_decay=1e-3)
    first = train(mlp(norm=norm), vectors, config)
    second = train(mlp(norm=norm), vectors, config)
    assert_identical(first, second)
    assert np.all(np.isfinite(first.train_loss)) and np.all(np.isfinite(first.percentiles))


def test_different_training_seed_gives_different_records(vectors: Dataset) -> None:
    first = train(mlp(), vectors, FAST, seed=0)
    second = train(mlp(), vectors, FAST, seed=1)  # same weights, different minibatch order
    assert np.array_equal(first.weight_norms[0], second.weight_norms[0])
    assert not np.array_equal(first.train_loss, second.train_loss)


def test_global_rng_and_thread_count_are_restored(vectors: Dataset) -> None:
    seen_threads = []

    class ThreadSpy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen_threads.append(torch.get_num_threads())
            return x

    model = nn.Sequential(ThreadSpy(), nn.Linear(20, 4))
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(99)
        state = torch.random.get_rng_state()
        train(model, vectors, FAST, threads=1, steps=3)
        assert torch.get_num_threads() == 2
        assert torch.equal(torch.random.get_rng_state(), state)
    finally:
        torch.set_num_threads(previous)
    assert set(seen_threads) == {1}


def test_threads_restored_even_when_training_raises(vectors: Dataset) -> None:
    previous = torch.get_num_threads()
    wrong_width = build_mlp(21, 4, seed=0)
    torch.set_num_threads(2)
    try:
        with pytest.raises(ValueError, match=r"expects inputs of shape \(21,\).*\(20,\)"):
            train(wrong_width, vectors, FAST)
        bad_model = nn.Linear(21, 4)  # not a bnlab Network: torch's own error comes through
        with pytest.raises(RuntimeError):
            train(bad_model, vectors, FAST)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------------------------------------
# What is recorded
# ----------------------------------------------------------------------------------------------------------


def test_recorded_shapes_and_steps(vectors: Dataset) -> None:
    result = train(mlp(), vectors, FAST, steps=45)
    k, layers = 6, 3
    np.testing.assert_array_equal(result.steps, [0, 10, 20, 30, 40, 45])
    assert result.steps.dtype == np.int64
    for name in ("train_loss", "train_loss_avg", "test_loss", "test_accuracy"):
        assert getattr(result, name).shape == (k,), name
    assert result.percentiles.shape == (k, layers, 3) and result.unit_percentiles.shape == (k, layers, 3)
    assert result.grad_norms.shape == (k, layers + 1) and result.weight_norms.shape == (k, layers + 1)
    assert result.layer_names == ("hidden1", "hidden2", "hidden3", "output")
    assert result.hidden_names == ("hidden1", "hidden2", "hidden3")
    assert result.percentile_levels == (15.0, 50.0, 85.0)
    assert not result.diverged and result.diverged_at is None and result.steps_completed == 45
    assert np.all(np.diff(result.percentiles, axis=2) >= 0)  # 15th <= 50th <= 85th
    assert np.all((result.test_accuracy >= 0) & (result.test_accuracy <= 1))
    assert result.config.steps == 45 and result.model_spec.norm == "batch"


def test_explicit_record_steps(vectors: Dataset) -> None:
    result = train(mlp(), vectors, FAST, record_steps=(7, 3, 7, 40))
    np.testing.assert_array_equal(result.steps, [3, 7, 40])
    assert result.config.record_steps == (3, 7, 40)
    assert result.percentiles.shape == (3, 3, 3)


def test_step_zero_is_the_untrained_model(vectors: Dataset) -> None:
    model = mlp()
    untrained_loss, untrained_accuracy = evaluate(model, vectors.x_test, vectors.y_test)
    result = train(model, vectors, FAST, record_steps=(0, 1, 2))
    assert result.test_loss[0] == pytest.approx(untrained_loss, rel=1e-6)
    assert result.test_accuracy[0] == untrained_accuracy
    # Row 0's training loss and gradients come from the first minibatch, measured before any update: step 1's.
    assert result.train_loss[0] == result.train_loss[1]
    np.testing.assert_array_equal(result.grad_norms[0], result.grad_norms[1])
    assert result.train_loss[2] != result.train_loss[1]
    assert not np.array_equal(result.weight_norms[0], result.weight_norms[1])


def test_train_loss_and_gradients_are_those_of_the_minibatch(vectors: Dataset) -> None:
    model, copy = mlp(), mlp()
    result = train(model, vectors, FAST, record_steps=(1,), seed=3)
    first_batch = torch.randperm(vectors.num_train, generator=torch.Generator().manual_seed(3))[:32]
    loss = F.cross_entropy(copy(vectors.x_train[first_batch]), vectors.y_train[first_batch])
    loss.backward()
    assert result.train_loss[0] == pytest.approx(loss.item(), rel=1e-6)
    expected = [float(layer.weight.grad.norm()) for _, layer in copy.named_weight_layers()]
    np.testing.assert_allclose(result.grad_norms[0], expected, rtol=1e-5)


def test_train_loss_avg_averages_since_the_previous_record(vectors: Dataset) -> None:
    every = train(mlp(), vectors, FAST, record_every=1, steps=20)
    sparse = train(mlp(), vectors, FAST, record_steps=(10, 20), steps=20)
    assert sparse.train_loss_avg[0] == pytest.approx(every.train_loss[1:11].mean(), rel=1e-9)
    assert sparse.train_loss_avg[1] == pytest.approx(every.train_loss[11:21].mean(), rel=1e-9)


def test_unit_percentiles_follow_the_tracked_unit(vectors: Dataset) -> None:
    model = mlp(norm="none", depth=1)
    result = train(model, vectors, FAST, record_steps=(0,), tracked_unit=5, steps=1)
    # Row 0 describes the untrained model: recompute unit 5's pre-activations on the test split.
    with torch.no_grad():
        pre = mlp(norm="none", depth=1).hidden_layers[0].weight_layer(vectors.x_test)
    np.testing.assert_allclose(result.unit_percentiles[0, 0], np.percentile(pre[:, 5].numpy(), [15, 50, 85]),
                               rtol=1e-5)
    np.testing.assert_allclose(result.percentiles[0, 0], np.percentile(pre.numpy(), [15, 50, 85]), rtol=1e-5)


def test_weight_decay_shrinks_weights(vectors: Dataset) -> None:
    plain = train(mlp(), vectors, FAST, steps=60, lr=0.5, record_every=60)
    decayed = train(mlp(), vectors, FAST, steps=60, lr=0.5, weight_decay=0.05, record_every=60)
    assert np.all(decayed.weight_norms[-1, :3] < plain.weight_norms[-1, :3])


def test_model_left_in_train_mode_and_evaluate_restores_mode(vectors: Dataset) -> None:
    model = mlp()
    model.eval()
    train(model, vectors, FAST, steps=2)
    assert model.training
    model.eval()
    evaluate(model, vectors.x_test, vectors.y_test)
    assert not model.training


def test_cnn_on_synthetic_images() -> None:
    images = synthetic_data(num_train=64, num_test=32, num_classes=3, image_shape=(1, 6, 6), seed=1)
    model = build_cnn((1, 6, 6), 3, depth=2, width=4, norm="batch", seed=0)
    result = train(model, images.as_vectors(), FAST, steps=10, batch_size=16, record_every=5)  # viewed as images
    assert result.percentiles.shape == (3, 2, 3) and result.grad_norms.shape == (3, 3)
    assert np.all(np.isfinite(result.unit_percentiles))


def test_ghost_norm_trains(vectors: Dataset) -> None:
    pytest.importorskip("bnlab.nn", reason="bnlab.nn (GhostBatchNorm1d) is written separately")
    result = train(mlp(norm="ghost", ghost_batch_size=8), vectors, FAST, steps=20)
    assert not result.diverged and np.all(np.isfinite(result.train_loss))


def test_any_module_can_be_trained(vectors: Dataset) -> None:
    model = nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 4))
    result = train(model, vectors, FAST, steps=10, record_every=5)
    assert result.layer_names == ("0", "2") and result.model_spec is None
    assert result.percentiles.shape == (3, 0, 3) and result.grad_norms.shape == (3, 2)


def test_result_converts_to_json(vectors: Dataset) -> None:
    result = train(mlp(), vectors, FAST, steps=10)
    text = json.dumps(result.as_dict())
    assert json.loads(text)["config"]["steps"] == 10
    assert "finished" in repr(result)


def test_progress_bar_can_be_shown(vectors: Dataset, capsys: pytest.CaptureFixture) -> None:
    result = train(mlp(), vectors, FAST, steps=5, progress=True)
    assert result.steps_completed == 5
    assert "training" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# Divergence
# ----------------------------------------------------------------------------------------------------------


def test_huge_learning_rate_diverges_without_raising(vectors: Dataset) -> None:
    model = build_mlp(20, 4, depth=5, width=32, activation="relu", init="he", seed=0)
    result = train(model, vectors, FAST, lr=100.0, steps=200, record_every=1)
    assert result.diverged and result.diverged_at is not None and result.diverged_at < 200
    assert result.steps_completed == result.diverged_at - 1
    assert result.diverged_loss is not None and not result.diverged_loss <= FAST.divergence_threshold
    assert result.steps[-1] == result.steps_completed  # records stop before the diverged step
    assert result.steps.shape == result.train_loss.shape == result.test_accuracy.shape
    assert np.all(np.isfinite(result.train_loss)) and np.all(result.train_loss <= FAST.divergence_threshold)
    assert "diverged at step" in repr(result)


def test_non_finite_loss_diverges(vectors: Dataset) -> None:
    model = mlp(norm="none")
    with torch.no_grad():
        model.output_layer.weight[0, 0] = math.nan
    result = train(model, vectors, FAST)
    assert result.diverged and result.diverged_at == 1 and math.isnan(result.diverged_loss)
    assert result.steps_completed == 0
    # The step-0 row keeps its evaluation; its minibatch loss and gradients were never computed.
    np.testing.assert_array_equal(result.steps, [0])
    assert math.isnan(result.train_loss[0]) and np.all(np.isnan(result.grad_norms[0]))


def test_divergence_threshold_is_configurable(vectors: Dataset) -> None:
    strict = train(mlp(), vectors, FAST, divergence_threshold=1e-3)
    assert strict.diverged and strict.diverged_at == 1


# ----------------------------------------------------------------------------------------------------------
# The paper's figure 1, small: BN learns, the tiny-init sigmoid baseline does not
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_bn_learns_where_the_sigmoid_baseline_is_stuck() -> None:
    data = load_mnist_subset()
    config = TrainConfig(steps=200, batch_size=60, lr=0.5, record_every=200, progress=False)
    runs = {norm: train(build_mlp(norm=norm, init="gaussian", init_std=0.01, seed=0), data, config)
            for norm in ("batch", "none")}
    assert runs["batch"].final_test_accuracy > 0.7
    assert runs["none"].final_test_accuracy < 0.2
    # BN keeps the last layer's sigmoid inputs spread out; the baseline's collapse to one value.
    spread = {norm: run.percentiles[-1, -1, 2] - run.percentiles[-1, -1, 0] for norm, run in runs.items()}
    assert spread["batch"] > 1.0 > 10 * spread["none"]


# ----------------------------------------------------------------------------------------------------------
# Config validation
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps must be an integer >= 1, got 0"),
    ({"lr": 0.0}, r"lr must be a finite number in \(0, inf\), got 0.0"),
    ({"lr": math.inf}, "lr must be a finite number"),
    ({"momentum": 1.0}, r"momentum must be a finite number in \[0, 1\), got 1.0"),
    ({"weight_decay": -1e-4}, "weight_decay must be a finite number"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"threads": 0}, "threads must be an integer >= 1"),
    ({"progress": "yes"}, "progress must be True or False"),
    ({"record_steps": (5, 2000)}, r"record_steps must hold at least one step, each in \[0, steps=1000\]"),
    ({"record_steps": ()}, "record_steps must hold at least one step"),
    ({"record_steps": (-1,)}, "each of record_steps must be an integer >= 0"),
    ({"record_every": 0}, "record_every must be an integer >= 1"),
])
def test_bad_config(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_batch_larger_than_training_set(vectors: Dataset) -> None:
    with pytest.raises(ValueError, match="batch_size 300 exceeds the 256 training examples"):
        train(mlp(), vectors, FAST, batch_size=300)


def test_unknown_override_is_a_type_error(vectors: Dataset) -> None:
    with pytest.raises(TypeError, match="learning_rate"):
        train(mlp(), vectors, FAST, learning_rate=0.1)


def test_recorded_steps_always_include_the_last() -> None:
    assert TrainConfig(steps=250, record_every=100).recorded_steps() == (0, 100, 200, 250)
    assert TrainConfig(steps=200, record_every=100).recorded_steps() == (0, 100, 200)
