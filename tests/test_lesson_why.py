"""Lecture 11's computations (bnlab.lessons.why) and figures: each measurement against a direct computation,
the numbers the notebook prints inside the same brackets, and the numbers its prose states."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from bnlab.experiments import OneStepConfig, one_step_loss_ratio
from bnlab.lessons.why import (
    NORMALIZATIONS,
    Collapse,
    WhyConfig,
    add_step_noise,
    collapse_by_depth,
    distribution_shift,
    effective_rank,
    final_train_loss,
    gradient_ics,
    gradient_probe,
    ics_at,
    ics_summary,
    initial_logit_rms,
    landscape_summary,
    local_smoothness,
    noise_growth,
    noise_mean_shift,
    one_step_probe,
    one_step_probes,
    probe_batch,
    representations,
    run_nets,
    sampling_shift,
    train_probed,
)
from bnlab.models import build_mlp
from bnlab.plots.why import (
    NORMALIZE_LABELS,
    plot_collapse,
    plot_ics,
    plot_landscape,
    plot_noisy_bn,
    plot_one_step,
)
from bnlab.recording import hidden_layer_outputs

MILD = {"noise_shift": 0.5, "noise_scale": 1.5, "probe_every": None}
STRONG = {"noise_shift": 1.0, "noise_scale": 2.0, "probe_every": None}
LECTURE_NETS = {
    "no BN": WhyConfig(norm="none"), "BN": WhyConfig(norm="batch"),
    "no BN + mild noise": WhyConfig(norm="none", **MILD), "BN + mild noise": WhyConfig(norm="batch", **MILD),
    "no BN + noise": WhyConfig(norm="none", **STRONG), "BN + noise": WhyConfig(norm="batch", **STRONG),
    "no BN, frozen": WhyConfig(norm="none", frozen=True, probe_every=None)}
LECTURE_LRS = (0.01, 0.0316, 0.1, 0.316, 1.0)


def inside(values, low=None, high=None) -> bool:
    """The test of bnlab.report's brackets: exclusive alone, inclusive as a range; NaN is outside."""
    values = np.asarray(values, dtype=float)
    ok = np.isfinite(values)
    if low is not None:
        ok &= values > low if high is None else values >= low
    if high is not None:
        ok &= values < high if low is None else values <= high
    return bool(ok.all())


def small_net(norm="batch", activation="relu", depth=3, seed=0):
    return build_mlp(in_features=6, num_classes=3, depth=depth, width=8, activation=activation, norm=norm,
                     init="he", seed=seed)


def small_batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


# ------------------------------------------------------------------------------------------------ the config


def test_config_checks_its_fields_and_says_what_came():
    with pytest.raises(ValueError, match="norm must be one of"):
        WhyConfig(norm="layer")
    with pytest.raises(ValueError, match="noise_scale must be a finite number in \\[1"):
        WhyConfig(noise_scale=0.5)
    with pytest.raises(ValueError, match="probe_every must be None for a noisy config"):
        WhyConfig(noise_shift=0.5)
    with pytest.raises(ValueError, match="probe_lrs must be a non-empty sequence"):
        WhyConfig(probe_lrs=())
    with pytest.raises(ValueError, match="each of probe_lrs"):
        WhyConfig(probe_lrs=(0.1, -1.0))
    with pytest.raises(ValueError, match="seeds must be a non-empty sequence"):
        WhyConfig(seeds=())
    with pytest.raises(ValueError, match="probe_every must be None for a frozen config"):
        WhyConfig(frozen=True)
    with pytest.raises(TypeError, match="frozen must be True or False"):
        WhyConfig(frozen=1, probe_every=None)


def test_config_steps():
    config = WhyConfig()
    assert config.recorded_steps() == (0, 10, 25, 50, 100, 150, 200, 250, 300)
    assert config.probe_steps() == (0, 75, 150, 225, 300)
    assert WhyConfig(steps=80, probe_every=50).probe_steps() == (0, 50, 80)
    assert WhyConfig(probe_every=None).probe_steps() == ()
    assert not config.noisy and WhyConfig(noise_scale=1.5, probe_every=None).noisy


# ------------------------------------------------------------------------------------------------ the noise


def test_step_noise_shifts_and_scales_each_unit_in_training_mode_only():
    model = small_net(norm="none")
    z = torch.randn(32, 8)
    seen = []
    handles = add_step_noise(model, 0.5, 1.5, torch.Generator().manual_seed(0))
    model.hidden_layers[0].activation.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    act = model.hidden_layers[0].activation
    act.train()
    first, second = act(z), act(z)
    noisy = seen[0]
    assert torch.equal(first, torch.relu(noisy))
    c = (noisy[1] - noisy[0]) / (z[1] - z[0])                     # per unit: y' = c z + b
    b = noisy[0] - c * z[0]
    assert torch.allclose(noisy, z * c + b, atol=1e-5)
    assert bool(((c >= 1 / 1.5 - 1e-5) & (c <= 1.5 + 1e-5)).all()) and bool((b.abs() <= 0.5 + 1e-5).all())
    assert not torch.allclose(first, second)                      # new noise at every training forward
    act.eval()
    seen.clear()
    act(z)
    assert torch.equal(seen[0], z)                                # off in eval mode
    act.train()
    act.hold_noise = True                                         # held: the last step's (b, c) again
    held = act(z)
    assert torch.equal(held, second)
    act.hold_noise = False
    for handle in handles:
        handle.remove()
    act.train()
    seen.clear()
    act(z)
    assert torch.equal(seen[0], z)


def test_the_noise_alone_moves_the_mean_as_the_formula_says():
    rng = np.random.default_rng(0)
    for shift, scale in ((1.0, 2.0), (0.5, 1.5), (0.3, 1.0)):
        b = rng.uniform(-shift, shift, (2, 400_000))
        c = scale ** rng.uniform(-1, 1, 400_000)
        assert np.mean(np.abs(b[1] - b[0]) / c) == pytest.approx(noise_mean_shift(shift, scale), rel=0.01)
    assert noise_mean_shift(1.0, 2.0) == pytest.approx(0.721, abs=5e-4)
    assert noise_mean_shift(0.5, 1.5) == pytest.approx(0.343, abs=5e-4)
    with pytest.raises(ValueError, match="scale"):
        noise_mean_shift(1.0, 0.5)


def test_sampling_shift_is_the_mean_move_of_two_minibatch_means():
    rng = np.random.default_rng(1)
    means = rng.standard_normal((2, 200_000, 64)).mean(axis=2)
    assert np.mean(np.abs(means[1] - means[0])) == pytest.approx(sampling_shift(64), rel=0.01)
    assert sampling_shift(64) == pytest.approx(0.141, abs=5e-4)


# ------------------------------------------------------------------------------------------------ the probes


def test_gradient_ics_is_the_gradient_after_only_the_layers_below_stepped():
    model = small_net(norm="batch")
    x, y = small_batch()
    lr = 0.3
    state = copy.deepcopy(model.state_dict())
    ics = gradient_ics(model, x, y, lr)
    assert ics.shape == (3, 3)                                    # layers 2, 3 and the output layer
    for key, value in model.state_dict().items():                 # the model is untouched
        assert torch.equal(value, state[key])
    assert all(p.grad is None for p in model.parameters())

    def weight_grad(net, k):
        net.zero_grad()
        F.cross_entropy(net(x), y).backward()
        layer = net.hidden_layers[k].weight_layer if k < len(net.hidden_layers) else net.output
        return layer.weight.grad.double().clone()

    reference = copy.deepcopy(model).train()
    reference.zero_grad()
    F.cross_entropy(reference(x), y).backward()
    steps = {id(p): lr * p.grad.clone() for p in reference.parameters()}
    for k in (1, 2, 3):
        before = copy.deepcopy(model).train()
        g = weight_grad(before, k)
        after = copy.deepcopy(model).train()
        with torch.no_grad():
            for block, ref_block in zip(after.hidden_layers[:k], reference.hidden_layers[:k]):
                for p, ref in zip(block.parameters(), ref_block.parameters()):
                    p -= steps[id(ref)]
        g2 = weight_grad(after, k)
        difference = float((g - g2).norm())
        assert ics[k - 1, 0] == pytest.approx(difference, rel=1e-4)
        assert ics[k - 1, 1] == pytest.approx(difference / float(g.norm()), rel=1e-4)
        assert ics[k - 1, 2] == pytest.approx(float((g * g2).sum() / (g.norm() * g2.norm())), rel=1e-4)


def test_gradient_ics_vanishes_with_the_step_of_the_layers_below():
    model = small_net(norm="batch", activation="tanh").double()
    x, y = small_batch()
    ics = gradient_ics(model, x.double(), y, 1e-7)
    assert np.all(ics[:, 1] < 1e-5) and np.all(ics[:, 2] > 1 - 1e-9)


def test_gradient_probe_steps_every_parameter_along_minus_the_gradient():
    model = small_net(norm="batch")
    x, y = small_batch()
    loss0, norm, losses, change = gradient_probe(model, x, y, (0.1, 0.5))
    reference = copy.deepcopy(model).train()
    reference.zero_grad()
    loss = F.cross_entropy(reference(x), y)
    loss.backward()
    grads = [p.grad.clone() for p in reference.parameters()]
    assert loss0 == pytest.approx(loss.item(), rel=1e-6)
    assert norm == pytest.approx(math.sqrt(sum(float(g.double().square().sum()) for g in grads)), rel=1e-6)
    for eta, probed, moved in zip((0.1, 0.5), losses, change):
        stepped = copy.deepcopy(model).train()
        with torch.no_grad():
            for p, g in zip(stepped.parameters(), grads):
                p -= eta * g
        stepped.zero_grad()
        after = F.cross_entropy(stepped(x), y)
        after.backward()
        assert probed == pytest.approx(after.item(), rel=1e-5)
        expected = math.sqrt(sum(float((p.grad.double() - g.double()).square().sum())
                                 for p, g in zip(stepped.parameters(), grads)))
        assert moved == pytest.approx(expected, rel=1e-4)


def test_a_smooth_nets_gradient_change_per_distance_does_not_depend_on_a_tiny_step():
    tiny, small = local_smoothness("tanh", "none", 0, 1e-6), local_smoothness("tanh", "none", 0, 1e-5)
    assert tiny == pytest.approx(small, rel=1e-3)
    with pytest.raises(ValueError, match="norm"):
        local_smoothness("tanh", "layer")


def test_probe_batch_is_fixed_per_seed():
    x0, y0 = probe_batch(0)
    x1, _ = probe_batch(1)
    assert x0.shape == (64, 784) and y0.shape == (64,)
    assert torch.equal(probe_batch(0)[0], x0) and not torch.equal(x0, x1)


# ------------------------------------------------------------------------------------------------ short runs


@pytest.fixture(scope="module")
def short_runs():
    """Depth-4 nets, 40 updates: what train_probed records, fast."""
    base = {"depth": 4, "steps": 40, "record_every": 20, "seeds": (0, 1)}
    return run_nets({"no BN": WhyConfig(probe_every=20, **base), "BN": WhyConfig(norm="batch", probe_every=20, **base),
                     "BN + noise": WhyConfig(norm="batch", **STRONG, **base)})


def test_train_probed_records_what_the_lecture_draws(short_runs):
    runs = short_runs["BN"]
    assert runs.values("steps")[0].tolist() == [0, 10, 20, 25, 40]
    assert runs.values("mean_shift").shape == (2, 39, 4) and runs.values("unit_percentiles").shape == (2, 40, 3)
    assert runs.values("probe_mean_shift").shape == (2, 39, 4)
    assert runs.values("precise_accuracy").shape == (2,) and runs.values("clean_train_loss").shape == (2,)
    assert runs.values("probe_steps")[0].tolist() == [0, 20, 40]
    assert runs.values("ics").shape == (2, 3, 4, 3)
    assert runs.values("probe_losses").shape == (2, 3, 6) and runs.values("grad_change").shape == (2, 3, 6)
    assert "ics" not in short_runs["BN + noise"].names()
    percentiles = runs.values("unit_percentiles")
    assert np.all(percentiles[..., 0] <= percentiles[..., 1]) and np.all(percentiles[..., 1] <= percentiles[..., 2])


def test_run_nets_equals_each_seed_trained_alone(short_runs):
    alone = train_probed(WhyConfig(norm="batch", depth=4, steps=40, record_every=20, probe_every=20), 1)
    together = short_runs["BN"].arrays[1]
    for key, value in alone.items():
        assert np.array_equal(value, together[key], equal_nan=True), key
    with pytest.raises(TypeError, match="run_nets takes"):
        run_nets({"x": OneStepConfig()})


def test_bn_without_noise_keeps_its_inputs_still_and_the_noise_moves_them_as_predicted(short_runs):
    still, _ = distribution_shift(short_runs["BN"])
    noisy, _ = distribution_shift(short_runs["BN + noise"])
    assert np.all(still < 0.01)
    assert np.all(np.abs(noisy / noise_mean_shift(1.0, 2.0) - 1) < 0.15)


def test_the_shift_is_the_mean_move_of_each_units_minibatch_statistics():
    """Recompute the first rows of mean_shift from the minibatches the run saw (plain net, no noise)."""
    config = WhyConfig(depth=2, steps=4, record_every=4, probe_every=None)
    out = train_probed(config, 0)
    model = build_mlp(depth=2, width=100, activation="relu", norm="none", init="he", seed=0)
    inputs = []
    model.hidden_layers[1].activation.register_forward_pre_hook(
        lambda module, args: inputs.append(args[0].detach().double()) if module.training else None)
    from bnlab.experiments._runs import mnist
    from bnlab.train import TrainConfig, train
    train(model, mnist(), TrainConfig(steps=4, batch_size=64, lr=0.1, seed=0, record_steps=(4,), progress=False))
    mu = [z.mean(dim=0) for z in inputs]
    sigma = [z.std(dim=0, unbiased=False) for z in inputs]
    expected = [float(((mu[t] - mu[t - 1]).abs() / sigma[t - 1]).mean()) for t in (1, 2, 3)]
    assert out["mean_shift"][:, 1] == pytest.approx(expected, rel=1e-4)


def test_the_probe_shift_is_the_move_of_the_probe_batchs_statistics_from_step_to_step():
    """Recompute the first rows of probe_mean_shift: at forward t the weights are those after t - 1 updates."""
    from bnlab.experiments._runs import mnist
    from bnlab.train import TrainConfig, train
    config = WhyConfig(depth=2, steps=4, record_every=4, probe_every=None)
    out = train_probed(config, 0)
    x, _ = probe_batch(0)
    mu, sigma = [], []
    for updates in (0, 1, 2, 3):
        model = build_mlp(depth=2, width=100, activation="relu", norm="none", init="he", seed=0)
        if updates:
            train(model, mnist(), TrainConfig(steps=updates, batch_size=64, lr=0.1, seed=0, record_steps=(updates,),
                                              progress=False))
        inputs = []
        model.hidden_layers[1].activation.register_forward_pre_hook(
            lambda module, args, inputs=inputs: inputs.append(args[0].detach().double()))
        with torch.no_grad():
            model.train()(x)
        mu.append(inputs[0].mean(dim=0))
        sigma.append(inputs[0].std(dim=0, unbiased=False))
    expected = [float(((mu[t] - mu[t - 1]).abs() / sigma[t - 1]).mean()) for t in (1, 2, 3)]
    assert out["probe_mean_shift"][:3, 1] == pytest.approx(expected, rel=1e-4)


def test_the_probe_changes_nothing_the_run_computes():
    """A noisy BN net trained by train_probed (with its probe forwards) ends exactly where train() alone ends."""
    from bnlab.experiments._runs import mnist
    from bnlab.train import TrainConfig, train
    config = WhyConfig(norm="batch", depth=3, steps=30, record_every=30, **STRONG)
    out = train_probed(config, 1)
    model = build_mlp(depth=3, width=100, activation="relu", norm="batch", init="he", seed=1)
    add_step_noise(model, 1.0, 2.0, torch.Generator().manual_seed(1 + 10_000))
    result = train(model, mnist(), TrainConfig(steps=30, batch_size=64, lr=0.1, seed=1, record_steps=(0, 10, 25, 30),
                                               threads=1, progress=False))
    assert out["final_accuracy"] == pytest.approx(result.test_accuracy[-1], abs=0)


def test_a_frozen_run_keeps_its_weights_and_moves_by_sampling_alone():
    out = train_probed(WhyConfig(depth=3, steps=20, record_every=10, frozen=True, probe_every=None), 0)
    assert np.all(out["probe_mean_shift"] == 0)                  # same weights, same probe batch: no move
    assert np.all(out["mean_shift"] > 0.05)                      # new minibatches: sampling moves it
    assert np.all(out["test_accuracy"] == out["test_accuracy"][0])


def test_clean_evaluation_recomputes_bns_statistics_without_the_noise():
    from bnlab.experiments._runs import mnist
    from bnlab.lessons.why import _clean_evaluation
    from bnlab.nn import recompute_batchnorm_statistics
    from bnlab.train import evaluate
    data = mnist()
    model = build_mlp(depth=3, width=100, activation="relu", norm="batch", init="he", seed=0)
    add_step_noise(model, 1.0, 2.0, torch.Generator().manual_seed(0))
    model.train()
    with torch.no_grad():
        for start in range(0, 640, 64):                          # noisy running statistics
            model(data.x_train[start:start + 64])
    config = WhyConfig(norm="batch", depth=3, **STRONG)
    clean = _clean_evaluation(model, config)
    reference = build_mlp(depth=3, width=100, activation="relu", norm="batch", init="he", seed=0)
    reference.load_state_dict(model.state_dict())
    assert clean["clean_train_loss_ema"] == pytest.approx(evaluate(reference, data.x_train, data.y_train)[0], rel=1e-6)
    recompute_batchnorm_statistics(reference, data.x_train.split(64))
    assert clean["precise_accuracy"] == evaluate(reference, data.x_test, data.y_test)[1]
    assert clean["clean_train_loss"] == pytest.approx(evaluate(reference, data.x_train, data.y_train)[0], rel=1e-6)
    assert clean["clean_train_loss"] != clean["clean_train_loss_ema"]


def test_noise_growth():
    assert noise_growth("none", shift=0.0, scale=1.0, draws=2) == pytest.approx([1.0, 1.0])
    assert noise_growth("none", draws=5).mean() > noise_growth("none", [1], draws=5).mean()
    with pytest.raises(ValueError, match="layers must be in 1..10"):
        noise_growth("batch", [11])


def test_initial_logit_rms_scales_with_the_init_as_a_homogeneous_net_does():
    ratio = (initial_logit_rms(OneStepConfig(depth=10, init="gaussian", init_std=0.15, seed=2))
             / initial_logit_rms(OneStepConfig(depth=10, seed=2)))
    assert ratio == pytest.approx(0.15 / math.sqrt(2 / 784) * (0.15 / math.sqrt(2 / 100)) ** 10, rel=1e-4)
    with pytest.raises(TypeError, match="OneStepConfig"):
        initial_logit_rms(WhyConfig())


def test_a_run_that_diverges_keeps_its_shapes_and_says_when():
    config = WhyConfig(depth=10, lr=3.0, steps=20, record_every=10, probe_every=5)
    out = train_probed(config, 0)
    assert out["diverged"] == 1 and out["diverged_at"] <= 5
    assert out["ics"].shape == (5, 10, 3) and np.isnan(out["ics"][-1]).all()
    assert out["mean_shift"].shape == (19, 10) and np.isnan(out["mean_shift"][-1]).all()
    assert math.isnan(out["final_accuracy"])


def test_summaries_read_the_probes(short_runs):
    runs = short_runs["no BN"]
    ics = runs.values("ics")
    summary = ics_summary(runs)
    assert summary["relative"] == pytest.approx(np.median(ics[:, 1:, :, 1].reshape(2, -1), axis=1))
    assert ics_at(runs, 0)["cosine"] == pytest.approx(np.median(ics[:, 0, :, 2], axis=1))
    with pytest.raises(ValueError, match="probe step"):
        ics_at(runs, 7)
    land = landscape_summary(runs)
    losses = np.concatenate([runs.values("loss0")[..., None], runs.values("probe_losses")], axis=2)[:, 1:]
    assert land["loss_range"] == pytest.approx(np.median(np.ptp(losses, axis=2), axis=1))
    change, norm = runs.values("grad_change")[:, 1:], runs.values("grad_norm")[:, 1:]
    assert land["beta"] == pytest.approx(np.median(change[..., 3] / (0.1 * norm), axis=1))
    with pytest.raises(ValueError, match="at_lr must be one of the probe step sizes"):
        landscape_summary(runs, at_lr=0.3)


# ------------------------------------------------------------------------------------------------ one step


def test_one_step_probe_takes_lecture_9s_step():
    for config in (OneStepConfig(norm="none", lr=0.316, seed=1), OneStepConfig(norm="batch", lr=1.0, seed=2),
                   OneStepConfig(norm="none", init="gaussian", lr=0.1)):
        ratio, growth = one_step_probe(config)
        assert ratio == one_step_loss_ratio(config)
        assert growth.shape == (10,)
    with pytest.raises(TypeError, match="OneStepConfig"):
        one_step_probe(WhyConfig())


def test_one_step_growth_is_the_rms_of_each_layers_output_after_over_before():
    config = OneStepConfig(norm="none", lr=0.316, seed=0, depth=4)
    _, growth = one_step_probe(config)
    from bnlab.experiments._runs import mnist
    data = mnist()
    model = build_mlp(depth=4, width=100, activation="relu", norm="none", init="he", seed=0)
    order = torch.randperm(data.num_train, generator=torch.Generator().manual_seed(0))[:64]
    x, y = data.x_train[order], data.y_train[order]
    before = [float(h.double().square().mean().sqrt()) for h in hidden_layer_outputs(model, x, True)]
    F.cross_entropy(model(x), y).backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.316 * p.grad
    after = [float(h.double().square().mean().sqrt()) for h in hidden_layer_outputs(model, x, True)]
    assert growth == pytest.approx(np.array(after) / np.array(before), rel=1e-5)


# ------------------------------------------------------------------------------------------------ rank collapse


def test_representations_batch_and_layer_are_the_nets_build_mlp_builds():
    x = probe_batch(0)[0]
    for normalize, norm in (("batch", "batch"), ("layer", "layer")):
        mine = representations(normalize, depth=6, seed=3, x=x)
        model = build_mlp(depth=6, width=100, activation="relu", norm=norm, init="he", seed=3)
        for a, b in zip(mine, hidden_layer_outputs(model, x, train_mode=True)):
            assert torch.allclose(a, b, atol=1e-5)
    plain = build_mlp(depth=6, width=100, activation="relu", norm="none", init="he", seed=3)
    for a, b in zip(representations("none", depth=6, seed=3, x=x), hidden_layer_outputs(plain, x, True)):
        assert torch.equal(a, b)


def test_representations_halves_of_bn():
    x = probe_batch(0)[0]
    centred = representations("center", depth=2, x=x, activation="linear")
    assert torch.allclose(centred[0].mean(dim=0), torch.zeros(100), atol=1e-5)
    scaled = representations("scale", depth=2, x=x, activation="linear")
    assert torch.allclose(scaled[1].var(dim=0, unbiased=False), torch.ones(100), atol=1e-3)
    assert scaled[1].mean(dim=0).abs().max() > 0.05                              # not centred
    rms = representations("rms", depth=2, x=x, activation="linear")
    assert torch.allclose(rms[1].square().mean(dim=0), torch.ones(100), atol=1e-3)
    assert rms[1].mean(dim=0).abs().max() > 0.05
    with pytest.raises(ValueError, match="normalize must be one of"):
        representations("group")
    with pytest.raises(ValueError, match="x must be \\(N, D\\) with N >= 2"):
        representations("batch", x=torch.zeros(1, 784))


def test_effective_rank():
    g = torch.Generator().manual_seed(0)   # its own draws: the result must not depend on which tests ran before
    q, _ = torch.linalg.qr(torch.randn(200, 20, dtype=torch.float64, generator=g))
    assert effective_rank(q) == pytest.approx(20, rel=1e-9)
    rank_one = torch.outer(torch.randn(50, generator=g), torch.randn(10, generator=g))
    assert effective_rank(rank_one) == pytest.approx(1, abs=1e-5)   # float32 rounding leaves tiny singular values
    assert effective_rank(torch.zeros(5, 3)) == 0.0
    h = torch.randn(30, 8, dtype=torch.float64, generator=g)
    s = torch.linalg.svdvals(h)
    p = s / s.sum()
    assert effective_rank(h) == pytest.approx(float(torch.exp(-(p * p.log()).sum())), rel=1e-10)
    assert effective_rank(h.T) == pytest.approx(effective_rank(h), rel=1e-10)
    with pytest.raises(ValueError, match="h must be a matrix"):
        effective_rank(torch.zeros(2, 3, 4))


def test_collapse_at_checks_the_layer():
    collapse = collapse_by_depth("batch", depth=3, seeds=(0,))
    assert isinstance(collapse, Collapse) and collapse.similarity.shape == (1, 3)
    similarity, rank = collapse.at(3)
    assert similarity[0] == collapse.similarity[0, 2] and rank[0] == collapse.rank[0, 2]
    with pytest.raises(ValueError, match="layer must be in 1..3"):
        collapse.at(0)


# ------------------------------------------------------------------------------------------------ figures


def test_figures_draw_short_runs_and_a_diverged_net(short_runs):
    diverged = run_nets({"no BN + noise": WhyConfig(depth=4, steps=20, record_every=10, seeds=(0,), **STRONG),
                         "no BN": WhyConfig(depth=4, steps=20, record_every=10, seeds=(0,), probe_every=10)})
    assert isinstance(plot_noisy_bn({**short_runs, **diverged}), Figure)
    assert isinstance(plot_ics(short_runs), Figure)
    assert isinstance(plot_landscape(short_runs), Figure)
    probes = one_step_probes({"no BN, depth 30": OneStepConfig(depth=4), "BN, depth 30": OneStepConfig(depth=4, norm="batch"),
                              "no BN, depth 10, default init": OneStepConfig(depth=4, init="default")},
                             lrs=(0.1, 10.0), seeds=(0,))
    assert isinstance(plot_one_step(probes), Figure)
    relu = {NORMALIZE_LABELS[n]: collapse_by_depth(n, depth=3, seeds=(0,)) for n in NORMALIZATIONS}
    assert isinstance(plot_collapse(relu, {"BN": relu["BN"]}), Figure)
    assert isinstance(plot_collapse(relu), Figure)


# ------------------------------------------------------------------------------------------------ the lecture's numbers


@pytest.fixture(scope="module")
def nets():
    """The lecture's six nets, three seeds, 300 updates (about 30 s of CPU)."""
    return run_nets(LECTURE_NETS)


@pytest.mark.slow
def test_noisy_bn_numbers(nets):
    loss = {label: final_train_loss(nets[label]) for label in nets}
    accuracy = {label: nets[label].final_accuracies() for label in nets}
    assert inside(loss["no BN"], high=0.3) and inside(loss["BN"], high=0.3)
    assert inside(loss["no BN + mild noise"], low=0.7) and inside(loss["BN + mild noise"], 0.3, 0.5)
    assert inside(loss["BN + noise"], 0.6, 1.0)
    assert inside(accuracy["no BN"], low=0.88) and inside(accuracy["BN"], low=0.9)
    assert inside(accuracy["no BN + mild noise"], high=0.8) and inside(accuracy["BN + mild noise"], low=0.88)
    assert inside(accuracy["BN + noise"], 0.65, 0.8)
    assert nets["no BN + noise"].diverged_at().tolist() == [3, 3, 3]
    # the prose: "0.36 against 0.19", "four times", "0.90-0.93", "0.61-0.72", "0.72-0.75", "about 0.91"
    assert 0.355 <= loss["BN + mild noise"].min() and loss["BN + mild noise"].max() < 0.375
    assert 0.175 <= loss["BN"].min() and loss["BN"].max() < 0.2
    assert 3.5 < loss["BN + noise"].mean() / loss["BN"].mean() < 4.5
    assert 0.895 <= accuracy["BN + mild noise"].min() and accuracy["BN + mild noise"].max() < 0.935
    assert 0.605 <= accuracy["no BN + mild noise"].min() and accuracy["no BN + mild noise"].max() < 0.725
    assert 0.715 <= accuracy["BN + noise"].min() and accuracy["BN + noise"].max() < 0.755
    assert np.all(np.abs(accuracy["no BN"] - 0.91) < 0.005)
    assert 0.915 <= accuracy["BN"].min() and accuracy["BN"].max() < 0.945                     # "0.92-0.94"
    # noise off, BN's statistics recomputed: the printed brackets, then the prose
    precise = {label: nets[label].values("precise_accuracy") for label in nets}
    clean = {label: nets[label].values("clean_train_loss") for label in nets}
    assert inside(precise["no BN"], low=0.88) and inside(clean["no BN"], high=0.25)
    assert inside(precise["BN"], low=0.9) and inside(clean["BN"], high=0.1)
    assert inside(precise["BN + mild noise"], low=0.9) and inside(clean["BN + mild noise"], high=0.2)
    assert inside(precise["BN + noise"], 0.83, 0.9) and inside(clean["BN + noise"], 0.3, 0.5)
    assert inside(nets["BN + noise"].values("clean_train_loss_ema"), 0.5, 1.0)
    assert 0.915 <= precise["BN + mild noise"].min() and precise["BN + mild noise"].max() < 0.935   # "0.92-0.93"
    assert 0.845 <= precise["BN + noise"].min() and precise["BN + noise"].max() < 0.885             # "0.85-0.88"
    assert 0.365 <= clean["BN + noise"].min() and clean["BN + noise"].max() < 0.415                 # "0.37-0.41"
    assert 0.615 <= nets["BN + noise"].values("clean_train_loss_ema").min()                         # "0.62-0.82"
    assert nets["BN + noise"].values("clean_train_loss_ema").max() < 0.825
    assert 0.125 <= clean["BN + mild noise"].min() and clean["BN + mild noise"].max() < 0.155        # "0.13-0.15"
    assert 0.065 <= clean["BN"].min() and clean["BN"].max() < 0.085                                 # "0.07-0.08"
    assert 0.145 <= clean["no BN"].min() and clean["no BN"].max() < 0.195                           # "0.15-0.19"
    assert np.all(precise["BN + noise"] < precise["no BN"].min())                                   # below the plain net


@pytest.mark.slow
def test_distribution_shift_numbers(nets):
    moved = {label: distribution_shift(runs)[0] for label, runs in nets.items()}
    minibatch = {label: distribution_shift(runs, where="minibatch")[0] for label, runs in nets.items()}
    assert inside(moved["BN"], high=0.01) and inside(moved["no BN"], 0.12, 0.25)
    assert inside(minibatch["BN"], high=0.01) and inside(minibatch["no BN"], 0.18, 0.35)
    assert inside(minibatch["no BN, frozen"], 0.12, 0.17)
    assert 0.165 <= moved["no BN"].min() and moved["no BN"].max() < 0.195                     # "0.17-0.19"
    assert 0.235 <= minibatch["no BN"].min() and minibatch["no BN"].max() < 0.265             # "0.24-0.26"
    assert np.all(np.abs(minibatch["no BN, frozen"] - 0.14) < 0.01)                         # "0.14"
    assert np.all(np.abs(moved["BN"] - 0.0008) < 0.00015)                                   # "0.0008"
    for label, noise, (low, high) in (("BN + mild noise", MILD, (1.5, 2.5)), ("BN + noise", STRONG, (3, 5))):
        expected = noise_mean_shift(noise["noise_shift"], noise["noise_scale"])
        assert inside(moved[label], 0.9 * expected, 1.1 * expected)
        assert inside(moved[label].mean() / moved["no BN"].mean(), low, high)
    assert round(moved["BN + mild noise"].mean() / moved["no BN"].mean()) == 2               # "about 2 and 4"
    assert round(moved["BN + noise"].mean() / moved["no BN"].mean()) == 4
    assert inside(moved["no BN + mild noise"], low=0.6)


@pytest.mark.slow
def test_noise_compounding_numbers():
    growth = {(norm, str(layers)): np.array([noise_growth(norm, layers, seed=seed).mean() for seed in (0, 1, 2)])
              for norm, layers in (("none", None), ("none", [1]), ("batch", None), ("batch", [1]), ("batch", [10]))}
    assert inside(growth[("none", "None")], 3, 7) and 4.0 < growth[("none", "None")].min()      # "4-5"
    assert growth[("none", "None")].max() < 5.5
    assert inside(growth[("none", "[1]")], 1.05, 1.4) and growth[("none", "[1]")].max() < 1.35   # "1.1-1.3"
    assert inside(growth[("batch", "None")], 1.1, 1.5) and inside(growth[("batch", "[10]")], 1.1, 1.5)
    both = np.concatenate([growth[("batch", "None")], growth[("batch", "[10]")]])
    assert 1.15 < both.min() and both.max() < 1.35                                            # "1.2-1.3"
    assert inside(growth[("batch", "[1]")], 0.9, 1.1)
    assert 0.945 <= growth[("batch", "[1]")].min() and growth[("batch", "[1]")].max() < 1.015  # "0.95-1.01"


@pytest.mark.slow
def test_ics_numbers(nets):
    ics = {label: ics_summary(nets[label]) for label in ("no BN", "BN")}
    for label in ("no BN", "BN"):
        assert inside(ics[label]["relative"], 0.7, 1.3) and inside(ics[label]["cosine"], -0.5, 0.7)
    ratio = ics["BN"]["relative"].mean() / ics["no BN"]["relative"].mean()
    assert inside(ratio, 0.7, 1.3)                                                           # holds 1: unresolved
    both = np.concatenate([ics["no BN"]["relative"], ics["BN"]["relative"]])
    assert 0.865 <= both.min() and both.max() < 1.115                                        # "0.87-1.11"
    assert 0.865 <= ics["BN"]["relative"].min() and ics["BN"]["relative"].max() < 0.965       # "BN 0.87-0.96"
    assert 0.945 <= ics["no BN"]["relative"].min() and ics["no BN"]["relative"].max() < 1.115 # "0.95-1.11"
    assert ics["BN"]["relative"].max() > ics["no BN"]["relative"].min()                       # they overlap
    cosines = np.concatenate([ics["no BN"]["cosine"], ics["BN"]["cosine"]])
    assert -0.05 < cosines.min() and cosines.max() < 0.555                                    # "0 and 0.55"
    assert 0.335 <= ics["BN"]["cosine"].min() and ics["no BN"]["cosine"].max() < 0.395        # "0.34-0.55", "-0.01-0.39"
    start = {label: ics_at(nets[label], 0) for label in ("no BN", "BN")}
    assert inside(start["no BN"]["relative"], 0.9, 1.2) and inside(start["BN"]["relative"], 1.2, 1.6)
    assert 1.005 <= start["no BN"]["relative"].min() and start["no BN"]["relative"].max() < 1.075   # "1.01-1.07"
    assert 1.325 <= start["BN"]["relative"].min() and start["BN"]["relative"].max() < 1.415         # "1.33-1.41"


@pytest.mark.slow
def test_landscape_numbers(nets):
    land = {label: landscape_summary(nets[label]) for label in ("no BN", "BN")}
    assert inside(land["no BN"]["loss_range"], low=0.6) and inside(land["BN"]["loss_range"], high=0.3)
    assert inside(land["no BN"]["grad_change"], low=6) and inside(land["BN"]["grad_change"], high=4)
    assert inside(land["no BN"]["beta"], 8, 15) and inside(land["BN"]["beta"], 8, 15)
    ratios = {key: land["no BN"][key].mean() / land["BN"][key].mean() for key in ("loss_range", "grad_change", "beta")}
    assert inside(ratios["loss_range"], 4, 20) and round(ratios["loss_range"]) == 9          # "about 9 times"
    assert inside(ratios["grad_change"], 2.5, 8) and round(ratios["grad_change"]) == 4       # "about 4 times"
    assert inside(ratios["beta"], 0.8, 1.5)
    assert inside(land["no BN"]["relative_change"], low=3) and inside(land["BN"]["relative_change"], high=1.5)
    assert 4.1 < land["no BN"]["relative_change"].min() and land["no BN"]["relative_change"].max() < 4.55  # "4.2-4.5"
    assert 0.095 < land["BN"]["loss_range"].min() and land["BN"]["loss_range"].max() < 0.175          # "0.10-0.17"
    assert 0.9 < land["no BN"]["loss_range"].min() and land["no BN"]["loss_range"].max() < 1.5         # "0.9-1.5"


@pytest.mark.slow
def test_local_smoothness_numbers():
    smooth = {(act, norm): np.array([[local_smoothness(act, norm, seed, eta) for seed in (0, 1, 2)]
                                     for eta in (1e-5, 1e-3)])
              for act in ("tanh", "relu") for norm in ("none", "batch")}
    for (act, norm), (tiny, small) in smooth.items():
        assert inside(tiny / small, 0.9, 1.1) if act == "tanh" else inside(tiny / small, low=2)
    drift = np.concatenate([smooth[("relu", n)][0] / smooth[("relu", n)][1] for n in ("none", "batch")])
    assert 2.5 < drift.min() and drift.max() < 16.5                                          # "3 to 16 times"
    assert inside(smooth[("tanh", "batch")][0].mean() / smooth[("tanh", "none")][0].mean(), 1.5, 3)


@pytest.fixture(scope="module")
def probes():
    return one_step_probes({
        "no BN, depth 10": OneStepConfig(depth=10), "BN, depth 10": OneStepConfig(depth=10, norm="batch"),
        "no BN, depth 30": OneStepConfig(depth=30), "BN, depth 30": OneStepConfig(depth=30, norm="batch"),
        "no BN, depth 10, init N(0, 0.15²)": OneStepConfig(depth=10, init="gaussian", init_std=0.15),
        "no BN, depth 10, default init": OneStepConfig(depth=10, init="default")}, lrs=LECTURE_LRS)


@pytest.mark.slow
def test_one_step_numbers(probes):
    def at(label, lr):
        return probes[label].ratio[LECTURE_LRS.index(lr)]

    assert inside(at("no BN, depth 10", 0.1), high=1) and inside(at("no BN, depth 10", 0.316), low=1)
    assert inside(at("no BN, depth 10", 1.0), low=10)
    assert 2.8 < at("no BN, depth 10", 0.316).min() and at("no BN, depth 10", 0.316).max() < 6.25   # "2.9-6.2"
    assert 67 < at("no BN, depth 10", 1.0).min() and at("no BN, depth 10", 1.0).max() < 3550        # "68 to 3,500"
    assert inside(at("no BN, depth 30", 0.01), high=1.01)
    assert 2.6 < at("no BN, depth 30", 0.316).min() and at("no BN, depth 30", 0.316).max() < 3650   # "2.7 to 3,600"
    assert 1e10 < at("no BN, depth 30", 1.0).max() < 2e10                                          # "up to 1e10"
    assert inside(probes["BN, depth 10"].ratio, high=1.0)
    assert inside(probes["BN, depth 30"].ratio, 0.85, 1.1)
    assert 0.885 < probes["BN, depth 30"].ratio.min() and probes["BN, depth 30"].ratio.max() < 1.045  # "0.89-1.04"
    assert inside(at("no BN, depth 30", 0.316), low=1) and inside(at("no BN, depth 30", 1.0), low=10)
    assert inside(at("no BN, depth 10, init N(0, 0.15²)", 1.0), low=10)
    logits = np.array([initial_logit_rms(OneStepConfig(depth=10, init="gaussian", init_std=0.15, seed=seed))
                       / initial_logit_rms(OneStepConfig(depth=10, seed=seed)) for seed in (0, 1, 2)])
    assert inside(logits, 5, 6) and np.all(np.abs(logits - 5.4) < 0.05)                            # "5.4"
    assert 0.765 < probes["BN, depth 10"].ratio[0].min() and probes["BN, depth 10"].ratio[0].max() < 0.785  # "0.77-0.78"
    gaussian = at("no BN, depth 10, init N(0, 0.15²)", 0.1)
    assert inside(gaussian, low=10) and 15 < gaussian.min() and gaussian.max() < 42                  # "15-41"
    assert 0.515 < at("no BN, depth 10", 0.1).min() and at("no BN, depth 10", 0.1).max() < 0.975     # "0.52-0.97"
    assert inside(probes["no BN, depth 10, default init"].ratio, 0.98, 1.0)
    row = LECTURE_LRS.index(0.316)
    plain, bn = probes["no BN, depth 30"].growth[row], probes["BN, depth 30"].growth[row]
    assert inside(plain[:, 0], 1, 2) and inside(plain[:, -1], low=5)
    assert 1.14 < plain[:, 0].min() and plain[:, 0].max() < 1.5                                     # "1.15-1.5"
    assert 11 < plain[:, -1].min() and plain[:, -1].max() < 2100                                   # "11 to 2,000"
    assert inside(bn[:, -1], 0.9, 1.1) and np.all(np.abs(bn[:, -1] - 1) < 0.016)                  # "1.5%"
    assert inside(bn.max(axis=1), high=2) and 1.6 < bn.max() < 1.8                                # "about 1.8"


@pytest.fixture(scope="module")
def collapses():
    relu = {NORMALIZE_LABELS[n]: collapse_by_depth(n, "relu", depth=50) for n in NORMALIZATIONS}
    linear = {NORMALIZE_LABELS[n]: collapse_by_depth(n, "linear", depth=50)
              for n in ("none", "center", "scale", "rms", "batch")}
    return relu, linear


@pytest.mark.slow
def test_rank_collapse_numbers(collapses):
    relu, linear = collapses
    brackets = {"no norm": ((0.95, None), (None, 6)), "LayerNorm": ((0.95, None), (None, 8)),
                "centring only": ((0.7, 0.9), (None, 25)), "scaling by std": ((0.65, 0.8), (35, 50)),
                "scaling by RMS": ((0.45, 0.62), (50, 65)), "BN": ((0.3, 0.4), (60, None))}
    for label, (sim_bracket, rank_bracket) in brackets.items():
        similarity, rank = relu[label].at(50)
        assert inside(similarity, *sim_bracket) and inside(rank, *rank_bracket), label
    assert inside(relu["centring only"].at(10)[0], 0.3, 0.35)
    for label, bracket in (("no norm", (None, 10)), ("centring only", (None, 10)), ("scaling by std", (10, None)),
                           ("scaling by RMS", (10, None)), ("BN", (10, None))):
        assert inside(linear[label].at(50)[1], *bracket), label
    for label in ("scaling by std", "scaling by RMS"):
        assert inside(linear[label].at(50)[1].mean() / linear["BN"].at(50)[1].mean(), 0.9, 1.1)
    std_sim, std_rank = relu["scaling by std"].at(50)
    rms_sim, rms_rank = relu["scaling by RMS"].at(50)
    assert 0.705 <= std_sim.min() and std_sim.max() < 0.735 and np.all(np.abs(std_rank - 44) < 0.5)   # "44", "0.71-0.73"
    assert 0.515 <= rms_sim.min() and rms_sim.max() < 0.555 and 55.5 <= rms_rank.min() and rms_rank.max() < 59.5  # "56-59"
    # the prose
    assert 66.5 < relu["BN"].at(50)[1].min() and relu["BN"].at(50)[1].max() < 70                  # "67-70"
    low_ranks = np.concatenate([relu["no norm"].at(50)[1], relu["LayerNorm"].at(50)[1]])
    assert 2 <= low_ranks.min() and low_ranks.max() < 5.5                                         # "2-5"
    assert 6.5 < relu["centring only"].at(50)[1].min() and relu["centring only"].at(50)[1].max() < 17.5  # "7-17"
    assert 16 < linear["BN"].at(50)[1].min() and linear["BN"].at(50)[1].max() < 18                # "16-18"
    assert 5.5 < linear["no norm"].at(50)[1].min() and linear["centring only"].at(50)[1].max() < 7.5  # "6-7"
