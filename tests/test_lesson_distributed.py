"""Lecture 13: synchronized batch norm across processes (bnlab.distributed) against full-batch batch norm, the
numbers the lecture prints with their brackets, and the pool that starts and always ends the processes.

Most tests share one pool of two processes (started once: a spawned process imports torch, a few seconds);
the tests of failures start their own, because a failure ends a pool.
"""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnlab.distributed import workers
from bnlab.distributed.launcher import (
    PoolClosedError,
    ProcessGroupPool,
    WorkerError,
    WorkerTimeout,
    process_running,
    run_distributed,
)
from bnlab.distributed.sync_bn import (
    SyncBatchNorm,
    convert_to_sync_batchnorm,
    sync_batch_norm,
)
from bnlab.gradcheck import rel_error
from bnlab.lessons.distributed import (
    QUANTITIES,
    compare_with_full_batch,
    data_parallel_agreement,
    even_sizes,
    example_tensors,
    first_layer_inputs,
    full_batch_reference,
    local_statistics,
    mnist_batch,
    predicted_mean_spread,
    predicted_var_ratio,
    probe_torch_sync_batchnorm,
    split_statistics,
    spread_by_share,
    sync_batchnorm_kernels_on_cpu,
    training_step_costs,
)
from bnlab.nn import ghost_batch_norm
from bnlab.widgets.distributed import LocalStatisticsDashboard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


try:
    import psutil
except ImportError:  # not a declared dependency (ipykernel brings it): /proc then
    psutil = None


def running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie may wait for a PID 1 that never reaps);
    psutil's view when it is installed, else the library's /proc reading."""
    if psutil is None:
        return process_running(pid)
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_process_running_sees_this_process_a_finished_one_and_a_zombie():
    assert process_running(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while process_running(child.pid) and time.monotonic() < deadline:   # ends, not reaped: a zombie
        time.sleep(0.05)
    assert not process_running(child.pid)
    child.wait()
    assert not process_running(child.pid)
    if psutil is not None:
        assert running(os.getpid()) and not running(child.pid)


def wait_until_gone(pids, seconds: float = 10.0) -> list[int]:
    """The pids still running after waiting up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(running(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if running(p)]


@pytest.fixture(scope="module")
def pool():
    with ProcessGroupPool(2, timeout=120) as shared:
        yield shared
    assert wait_until_gone(shared.pids) == [], "closing the pool left processes behind"


@pytest.fixture(scope="module")
def digits():
    x, y = mnist_batch(64)
    return x, y, first_layer_inputs(x)


# ------------------------------------------------------------------- synchronized BN = full-batch BN


@pytest.mark.parametrize("shape, sizes", [
    ((64, 100), (32, 32)),
    ((64, 100), (24, 40)),
    ((8, 3), (3, 5)),
    ((8, 3, 4, 4), (4, 4)),
    ((8, 3, 4, 4), (3, 5)),
    ((8, 3, 4, 4), (1, 7)),     # a rank with a single image (16 values per channel)
    ((8, 5), (1, 7)),           # a rank with a single value per channel: fine, the global count is 8
    ((8, 3, 2, 2), (0, 8)),     # a rank with nothing at all
], ids=str)
def test_sync_bn_equals_full_batch_bn_in_float64(pool, shape, sizes):
    errors = compare_with_full_batch(pool, *example_tensors(shape, torch.float64, seed=sum(sizes)), sizes)
    assert set(errors) == set(QUANTITIES)
    assert max(errors.values()) < 1e-12, errors


@pytest.mark.parametrize("shape, sizes", [((64, 100), (24, 40)), ((8, 3, 4, 4), (3, 5))], ids=str)
def test_sync_bn_equals_full_batch_bn_in_float32(pool, shape, sizes):
    errors = compare_with_full_batch(pool, *example_tensors(shape, torch.float32), sizes)
    assert max(errors.values()) < 1e-5, errors


def test_running_statistics_equal_a_full_batch_torch_batchnorm_on_every_rank(pool):
    x, dout, weight, bias = example_tensors((8, 3, 4, 4), torch.float64)
    answers = pool.run(workers.sync_forward_backward, x, dout, (3, 5), weight, bias, True, 0.3)
    reference = torch.nn.BatchNorm2d(3, momentum=0.3, dtype=torch.float64)
    reference(x)
    for answer in answers:
        assert answer["num_batches_tracked"] == 1
        np.testing.assert_allclose(answer["running_mean"], reference.running_mean.numpy(), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(answer["running_var"], reference.running_var.numpy(), rtol=1e-13)
    unbiased = x.transpose(0, 1).reshape(3, -1).var(1, correction=1)
    np.testing.assert_allclose(answers[0]["running_var"], (0.7 + 0.3 * unbiased).numpy(), rtol=1e-13)


def test_local_statistics_are_the_control_that_differs_except_in_dbeta(pool):
    errors = compare_with_full_batch(pool, *example_tensors((64, 100), torch.float64), (32, 32), synchronize=False)
    for name in ("out", "dx", "dgamma", "running_mean", "running_var"):
        assert errors[name] > 0.05, (name, errors)
    assert errors["dbeta"] < 1e-12  # sum of dy: no statistics in it


def test_the_sum_over_ranks_of_their_dgamma_is_the_full_batch_one_but_each_rank_keeps_its_own(pool):
    x, dout, weight, bias = example_tensors((64, 100), torch.float64)
    answers = pool.run(workers.sync_forward_backward, x, dout, (24, 40), weight, bias)
    reference = full_batch_reference(x, dout, weight, bias)
    xhat = (reference["out"] - bias.numpy()) / weight.numpy()
    np.testing.assert_allclose(answers[0]["dgamma"], (dout.numpy() * xhat)[:24].sum(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(answers[0]["dgamma"] + answers[1]["dgamma"], reference["dgamma"], rtol=1e-12,
                               atol=1e-12)


# ------------------------------------------------------------------------------ the lecture's numbers


def test_local_statistics_of_half_a_batch_match_the_sampling_prediction(pool, digits):
    _, _, z = digits
    local = local_statistics(pool, z, (32, 32))
    rms = local.rms_mean_deviation()
    assert np.all((rms >= 0.09) & (rms <= 0.17))
    assert predicted_mean_spread(32, 64) == pytest.approx(1 / np.sqrt(63))
    assert 0.2 <= np.abs(local.mean_deviation()).max() <= 0.6
    assert local.var_ratio().min() < 0.8 and local.var_ratio().max() > 1.2
    assert np.abs(local.weighted_deviation_sum()).max() < 1e-12
    np.testing.assert_allclose(local.mean_deviation()[0], -local.mean_deviation()[1], atol=1e-12)  # mirrored



def test_the_spread_over_random_splits_matches_the_sampling_prediction(digits):
    _, _, z = digits
    spread = spread_by_share(z, (2, 4, 8, 16, 24, 32), splits=50)
    assert sorted(spread) == [2, 4, 8, 16, 24, 32, 40, 48, 56, 60, 62]
    ratios = {n: spread[n] / predicted_mean_spread(n, 64) for n in spread}
    assert all(0.9 <= ratios[n] <= 1.1 for n in ratios if n <= 32), ratios
    for n in (2, 4, 8, 16, 24):   # two shares: n d_0 = -(64 - n) d_1, the same ratio by construction
        assert abs(ratios[n] - ratios[64 - n]) < 1e-12
    assert 0.4 <= spread[4] <= 0.6
    assert spread_by_share(z, (8,), splits=3) == spread_by_share(z, (8,), splits=3)   # seeded


def test_the_single_process_twin_gives_the_ranks_numbers(pool, digits):
    _, _, z = digits
    for sizes in ((32, 32), (24, 40)):
        ranks, twin = local_statistics(pool, z, sizes), split_statistics(z, sizes)
        for name in ("counts", "mean", "var", "out"):
            np.testing.assert_array_equal(getattr(ranks, name), getattr(twin, name))


@pytest.mark.parametrize("world, share", [(2, 32), (64, 32), (16, 4), (64, 2)])
def test_local_statistics_of_w_shares_of_n_match_both_predictions(world, share):
    split = split_statistics(first_layer_inputs(mnist_batch(world * share)[0]), (share,) * world)
    total = world * share
    rms = np.sqrt(np.mean(split.mean_deviation() ** 2))
    assert 0.8 <= rms / predicted_mean_spread(share, total) <= 1.2
    assert 0.8 <= split.mean_var_ratio() / predicted_var_ratio(share, total) <= 1.2


def test_predicted_var_ratio_is_the_expectation_over_every_split():
    values = np.array([0.0, 1.0, 3.0, 7.0])
    pairs = [values[[i, j]] for i in range(4) for j in range(i + 1, 4)]
    expected = np.mean([p.var() for p in pairs]) / values.var()
    assert predicted_var_ratio(2, 4) == pytest.approx(expected)
    assert predicted_var_ratio(4, 4) == 1.0


def test_the_explorer_draws_every_setting_it_offers_and_hints_at_the_impossible():
    from bnlab.widgets.distributed import PER_PROCESS, PROCESSES

    dash = LocalStatisticsDashboard(progress=False)
    assert dash.last_error is None and dash.figure is not None and "predicted 0.126" in dash.status.value
    settings = {(w, 2) for w in PROCESSES} | {(w, n) for w in (1, 64) for n in PER_PROCESS}  # the edges
    for world, share in sorted(settings):
        dash.set(processes=world, per_process=share)
        assert dash.last_error is None, (world, share, dash.last_error)
        if world * share > 4000:
            assert "training split has 4,000" in dash.status.value
        else:
            assert dash.last_result.sizes == (share,) * world


def test_local_bn_differs_from_full_batch_bn_and_is_ghost_bn(pool, digits):
    _, _, z = digits
    local = local_statistics(pool, z, (32, 32))
    difference = np.abs(local.out - F.batch_norm(z, None, None, training=True).numpy())
    assert 0.03 <= np.median(difference) <= 0.2 and 0.3 <= difference.max() <= 1.5
    assert rel_error(local.out, ghost_batch_norm(z, 32, None, None).numpy()) < 1e-12


def test_a_data_parallel_step_with_sync_bn_is_the_full_batch_step(pool, digits):
    x, y, _ = digits
    sync = data_parallel_agreement(pool, x, y, (24, 40), synchronize=True)
    assert sync["update"] < 1e-12 and sync["beta_update"] < 1e-12 and sync["running_var"] < 1e-12
    local = data_parallel_agreement(pool, x, y, (24, 40), synchronize=False)
    assert local["update"] > 0.05 and local["running_var"] > 1e-3
    assert local["beta_update"] > 0.05   # in a network the upstream gradient depends on the statistics


def test_torch_sync_batchnorm_refuses_cpu_tensors_and_is_plain_bn_where_it_runs(pool, digits):
    _, _, z = digits
    probe = probe_torch_sync_batchnorm(pool, z)
    assert probe["train_error"].startswith("ValueError: SyncBatchNorm expected input tensor to be on GPU")
    assert probe["kernel_error"].startswith("NotImplementedError: Could not run 'aten::batch_norm_stats'")
    assert probe["kernel_error"].endswith("'CPU' backend.")
    assert probe["eval_error"] < 1e-12 and probe["outside_group_error"] < 1e-12
    assert set(sync_batchnorm_kernels_on_cpu().values()) == {"NotImplementedError"}


def test_sync_bn_adds_one_all_reduce_per_layer_in_each_pass(pool, digits):
    # Only the deterministic part: counts and sizes. Timings depend on the machine's load and are never asserted
    # (speed lives in benchmarks/, as ratios).
    x, y, _ = digits
    costs = training_step_costs(pool, x, y, (32, 32), repeats=3, warmup=1)
    assert costs.bn_layers == 3
    assert costs.calls == {"sync": (3, 7), "local": (0, 1)}
    assert costs.calls_per_bn_layer() == (1.0, 2.0)
    assert costs.numels == (402, 402, 402, 200, 200, 200, 100010)
    assert costs.local_numels == (100010,)
    assert sorted(costs.extra_numels()) == [200, 200, 200, 402, 402, 402]
    assert sorted(costs.bare_ms) == [200, 402, 100010] and costs.all_reduce_ms == costs.bare_ms[402]
    assert costs.predicted_extra_ms() == pytest.approx(3 * costs.bare_ms[200] + 3 * costs.bare_ms[402])
    assert len(costs.ms["sync"]) == len(costs.ms["local"]) == 3
    assert all(np.all(costs.collective_ms[v] <= costs.ms[v]) for v in ("sync", "local"))


def test_a_function_a_spawned_process_cannot_import_is_refused_and_the_pool_stays_usable(pool):
    def nested():
        return 1

    for bad in (nested, lambda: 1, 42):
        with pytest.raises(TypeError, match="importable|function"):
            pool.run(bad)
    assert not pool.closed
    assert sorted(pool.run(workers.process_id)) == sorted(pool.pids)


# ----------------------------------------------------------------------------- in one process, no group


def test_without_a_process_group_sync_bn_is_ordinary_batch_norm():
    x, dout, weight, bias = example_tensors((6, 4, 3), torch.float64)
    inputs = x.clone().requires_grad_()
    out = sync_batch_norm(inputs, None, None, weight, bias)
    out.backward(dout)
    reference = full_batch_reference(x, dout, weight, bias)
    assert rel_error(out.detach().numpy(), reference["out"]) < 1e-13
    assert rel_error(inputs.grad.numpy(), reference["dx"]) < 1e-13


def test_sync_bn_module_matches_torch_batchnorm_through_training_and_eval():
    torch.manual_seed(0)
    ours = SyncBatchNorm(3, momentum=None, dtype=torch.float64)
    theirs = torch.nn.BatchNorm2d(3, momentum=None, dtype=torch.float64)
    for _ in range(3):
        x = torch.randn(4, 3, 2, 2, dtype=torch.float64) * 3 + 1
        assert rel_error(ours(x).detach().numpy(), theirs(x).detach().numpy()) < 1e-13
    for name in ("running_mean", "running_var"):
        assert rel_error(getattr(ours, name).numpy(), getattr(theirs, name).numpy()) < 1e-13
    ours.eval(), theirs.eval()
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    assert rel_error(ours(x).detach().numpy(), theirs(x).detach().numpy()) < 1e-13


def test_convert_to_sync_batchnorm_keeps_state_and_settings():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3, eps=1e-3, momentum=0.2))
    model[1].running_mean.fill_(0.5)
    converted = convert_to_sync_batchnorm(model, synchronize=False)
    layer = converted[1]
    assert isinstance(layer, SyncBatchNorm) and not layer.synchronize
    assert (layer.eps, layer.momentum) == (1e-3, 0.2) and torch.all(layer.running_mean == 0.5)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        convert_to_sync_batchnorm("model")


def test_bad_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        sync_batch_norm(torch.randn(1, 3, dtype=torch.float64), None, None)
    with pytest.raises(TypeError, match="floating-point"):
        sync_batch_norm(torch.ones(4, 3, dtype=torch.long), None, None)
    with pytest.raises(ValueError, match="expected input with 3 channels"):
        SyncBatchNorm(3)(torch.randn(4, 5))
    with pytest.raises(ValueError, match="adding up to the batch of 8"):
        workers.check_sizes((3, 4), 8, 2)
    with pytest.raises(ValueError, match="each of the 2 ranks"):
        workers.check_sizes((8,), 8, 2)
    with pytest.raises(ValueError, match="world_size must be a positive number of processes"):
        ProcessGroupPool(0)
    with pytest.raises(ValueError, match="share must be at most total"):
        predicted_mean_spread(65, 64)
    assert even_sizes(7, 2) == (4, 3)


# -------------------------------------------------------------------------- the processes always end


@pytest.mark.slow
def test_a_rank_that_raises_names_itself_and_leaves_no_process_behind():
    pool = ProcessGroupPool(2, timeout=60)
    pids = pool.pids
    assert all(running(p) for p in pids)
    with pytest.raises(WorkerError) as caught:
        pool.run(workers.raise_on_rank, 1, "boom on one rank")
    error = caught.value
    assert (error.rank, error.exc_type, error.exc_message) == (1, "ValueError", "boom on one rank")
    assert str(error).startswith("rank 1 failed in bnlab.distributed.workers.raise_on_rank: ValueError: boom")
    assert "raise ValueError(message)" in error.remote_traceback
    assert wait_until_gone(pids, 5.0) == []
    assert pool.closed and pool.alive() == [False, False]
    with pytest.raises(PoolClosedError, match="closed .*WorkerError"):
        pool.run(workers.process_id)


@pytest.mark.slow
def test_too_few_values_over_all_ranks_raise_on_a_rank_and_end_the_pool():
    pool = ProcessGroupPool(2)
    x, dout, weight, bias = example_tensors((1, 3), torch.float64)
    with pytest.raises(WorkerError, match="Expected more than 1 value per channel when training, got 1 value"):
        pool.run(workers.sync_forward_backward, x, dout, (1, 0), weight, bias)
    assert wait_until_gone(pool.pids, 5.0) == []


@pytest.mark.slow
def test_a_rank_that_hangs_is_killed_after_the_timeout():
    pool = ProcessGroupPool(2)
    pids = pool.pids
    start = time.monotonic()
    with pytest.raises(WorkerTimeout) as caught:
        pool.run(workers.sleep_on_rank, 1, 600, timeout=1.5)
    assert time.monotonic() - start < 15
    assert caught.value.ranks == (1,) and "rank(s) 1 did not finish" in str(caught.value)
    assert wait_until_gone(pids, 5.0) == []


@pytest.mark.slow
def test_a_rank_that_dies_is_reported_with_its_exit_code():
    pool = ProcessGroupPool(2)
    pids = pool.pids
    threading.Timer(1.0, os.kill, (pids[1], signal.SIGKILL)).start()
    with pytest.raises(WorkerError) as caught:
        pool.run(workers.sleep_on_rank, None, 600, timeout=60)
    assert caught.value.rank == 1 and caught.value.exc_type == "exit" and "code -9" in str(caught.value)
    assert wait_until_gone(pids, 5.0) == []


@pytest.mark.slow
def test_run_distributed_returns_every_ranks_value_and_ends_the_processes():
    pids = run_distributed(workers.process_id, world_size=2)
    assert len(set(pids)) == 2
    assert wait_until_gone(pids, 5.0) == []


SCRIPT = textwrap.dedent("""
    import faulthandler, signal, sys, time
    from bnlab.distributed.launcher import ProcessGroupPool
    from bnlab.distributed import workers

    if __name__ == "__main__":
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for a stack dump if it hangs
        # Ctrl-C raises KeyboardInterrupt, as in a terminal or a Jupyter kernel (ipykernel installs its own
        # handler). Without this line the script would inherit "ignore SIGINT" from a test run started in the
        # background by a non-interactive shell (`make test &`, CI runners), and nothing would interrupt it.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        mode = sys.argv[1]
        pool = ProcessGroupPool(2)
        print(*pool.pids, flush=True)
        if mode == "interrupt":
            print("running", flush=True)
            try:
                pool.run(workers.sleep_on_rank, None, 600)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
                sys.exit(3)
        elif mode == "exit":
            sys.exit(0)            # without closing the pool: the finalizer must end the processes
        else:
            time.sleep(600)        # to be killed
""")


def _start_script(tmp_path, mode):
    path = tmp_path / "pool_script.py"
    path.write_text(SCRIPT)
    process = subprocess.Popen([sys.executable, str(path), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT,
                               start_new_session=True)   # its own process group, like a Jupyter kernel
    line = process.stdout.readline()
    pids = [int(p) for p in line.split()]
    assert len(pids) == 2, f"the script did not start its pool: {line!r}"
    return process, pids


def _hang_report(process) -> str:
    """What a hung script is doing: its signal masks and its threads' stacks (faulthandler, on SIGUSR1)."""
    status = Path(f"/proc/{process.pid}/status").read_text().splitlines()
    masks = [line for line in status if line.startswith(("State", "SigBlk", "SigIgn", "SigCgt"))]
    os.kill(process.pid, signal.SIGUSR1)
    time.sleep(1.0)
    process.kill()
    return "\n".join(masks) + "\n" + process.communicate(timeout=10)[1][-4000:]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["interrupt", "exit", "kill"])
def test_no_orphans_after_an_interrupt_an_exit_or_a_killed_parent(tmp_path, mode):
    process, pids = _start_script(tmp_path, mode)
    try:
        if mode == "interrupt":
            assert process.stdout.readline().strip() == "running"
            time.sleep(2.0)    # inside run(), waiting for the ranks (generous: CI machines are busy)
            os.killpg(process.pid, signal.SIGINT)   # to the whole group, ranks included, as Jupyter does
            try:
                code = process.wait(60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the interrupted script did not exit within 60 s:\n{_hang_report(process)}")
            assert code == 3 and "interrupted" in process.stdout.read()
        elif mode == "exit":
            assert process.wait(30) == 0
        else:
            process.kill()
            process.wait(30)
        # a killed parent: each rank notices through its parent sentinel and exits
        assert wait_until_gone(pids, 10.0) == []
    finally:
        for pid in [process.pid, *pids]:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
