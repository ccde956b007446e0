"""find_lr on real torch training: its suggestions land near the lr a sweep finds best.

Two small problems on synthetic data, each with a known-good lr found the slow way:
train a fresh copy of the model with each of 16 log-spaced fixed lrs for a short
budget and keep the lr with the lowest loss on the whole data set. The range test's
every method (steepest, minimum, valley) must land within a factor of 3 of it. Data,
initial weights and batch order come from fixed seeds, on one thread: the same
numbers every run.
"""

import copy
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

from client import LRKeeper, RetryPolicy, find_lr
from client.range_finder import LrFinding
from tests.client.conftest import TEST_DEADLINE_SECONDS
from tests.conftest import LiveServer

pytestmark = pytest.mark.torch

BATCH_SIZE = 32
SWEEP_STEPS = 50
FACTOR = 3.0

Problem = tuple[torch.Tensor, torch.Tensor, Callable[[], nn.Module], nn.Module]


@pytest.fixture(scope="module")
def keeper(sqlite_server: LiveServer) -> Iterator[LRKeeper]:
    # The subject is the training loop, not the storage: one backend.
    with LRKeeper(sqlite_server.base_url, retry=RetryPolicy(deadline=TEST_DEADLINE_SECONDS)) as api:
        yield api


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def linear_regression() -> Problem:
    """y = x·w + noise over 10 standard normal features; mean squared error."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(512, 10, generator=generator)
    weights = torch.randn(10, 1, generator=generator)
    targets = inputs @ weights + 0.1 * torch.randn(512, 1, generator=generator)
    return inputs, targets, lambda: seeded(lambda: nn.Linear(10, 1)), nn.MSELoss()


def mlp_classifier() -> Problem:
    """Four overlapping gaussian classes in 20 dimensions; a 20-32-4 ReLU net, cross-entropy."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 20, generator=generator) * 0.5
    labels = torch.randint(0, 4, (1024,), generator=generator)
    inputs = centres[labels] + torch.randn(1024, 20, generator=generator)
    model = lambda: seeded(lambda: nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4)))  # noqa: E731
    return inputs, labels, model, nn.CrossEntropyLoss()


def seeded(build: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return build()


def batches(inputs: torch.Tensor, targets: torch.Tensor, seed: int) -> Iterator[Any]:
    """Shuffled mini-batches, pass after pass, in an order fixed by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs) - BATCH_SIZE + 1, BATCH_SIZE):
            chosen = order[start : start + BATCH_SIZE]
            yield inputs[chosen], targets[chosen]


def sweep_best_lr(problem: Problem, make_optimizer: Callable[..., Any], lrs: list[float]) -> float:
    """The lr whose short training ends at the lowest loss on the whole data set."""
    inputs, targets, build, loss_fn = problem
    final_losses = {}
    for lr in lrs:
        model = build()
        optimizer = make_optimizer(model.parameters(), lr=lr)
        stream = batches(inputs, targets, seed=2)
        for _ in range(SWEEP_STEPS):
            batch_inputs, batch_targets = next(stream)
            optimizer.zero_grad()
            loss_fn(model(batch_inputs), batch_targets).backward()
            optimizer.step()
        with torch.no_grad():
            final = loss_fn(model(inputs), targets).item()
        final_losses[lr] = final if math.isfinite(final) else math.inf
    return min(final_losses, key=final_losses.__getitem__)


def log_spaced(low: float, high: float, count: int) -> list[float]:
    return [low * (high / low) ** (i / (count - 1)) for i in range(count)]


def run_find_lr(
    keeper: LRKeeper,
    problem: Problem,
    make_optimizer: Callable[..., Any],
    *,
    start_lr: float,
    num_steps: int,
) -> tuple[LrFinding, nn.Module, Any]:
    inputs, targets, build, loss_fn = problem
    model = build()
    optimizer = make_optimizer(model.parameters(), lr=0.01)
    finding = find_lr(
        model,
        optimizer,
        loss_fn,
        batches(inputs, targets, seed=1),
        start_lr=start_lr,
        end_lr=10.0,
        num_steps=num_steps,
        client=keeper,
    )
    return finding, model, optimizer


@pytest.mark.parametrize(
    ("problem", "make_optimizer", "start_lr", "num_steps", "sweep"),
    [
        pytest.param(
            linear_regression,
            torch.optim.SGD,
            1e-5,
            200,
            log_spaced(1e-3, 10**0.5, 16),
            id="linear-regression-sgd",
        ),
        pytest.param(
            mlp_classifier,
            functools.partial(torch.optim.SGD, momentum=0.9),
            1e-5,
            100,
            log_spaced(1e-4, 1.0, 16),
            id="mlp-classifier-sgd-momentum",
        ),
    ],
)
def test_every_methods_suggestion_is_within_3x_of_the_lr_a_sweep_finds_best(
    keeper: LRKeeper,
    problem: Callable[[], Problem],
    make_optimizer: Callable[..., Any],
    start_lr: float,
    num_steps: int,
    sweep: list[float],
) -> None:
    made = problem()
    best = sweep_best_lr(made, make_optimizer, sweep)
    assert sweep[0] < best < sweep[-1]  # a real optimum inside the sweep, not its edge
    finding, _, _ = run_find_lr(
        keeper, made, make_optimizer, start_lr=start_lr, num_steps=num_steps
    )
    assert set(finding.suggestions) == {"steepest", "minimum", "valley"}
    for method, lr in finding.suggestions.items():
        assert best / FACTOR <= lr <= best * FACTOR, (method, lr, best)
    assert finding.method == "valley" and finding.lr == finding.suggestions["valley"]


def test_find_lr_puts_the_model_and_optimizer_back_as_they_were(keeper: LRKeeper) -> None:
    problem = linear_regression()
    inputs, targets, build, loss_fn = problem
    model = build()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    for batch_inputs, batch_targets in [next(batches(inputs, targets, seed=3))] * 3:
        optimizer.zero_grad()
        loss_fn(model(batch_inputs), batch_targets).backward()
        optimizer.step()  # moments in the optimizer's state, not only its defaults
    model.eval()
    parameters = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())

    finding = find_lr(
        model,
        optimizer,
        loss_fn,
        [next(batches(inputs, targets, seed=1)) for _ in range(4)],
        start_lr=1e-4,
        end_lr=10.0,
        num_steps=30,
        client=keeper,
    )

    assert finding.steps > 4  # the four batches were taken again
    assert not model.training
    assert all(torch.equal(value, parameters[name]) for name, value in model.state_dict().items())
    after = optimizer.state_dict()
    assert after["param_groups"] == optimizer_state["param_groups"]
    for key, state in optimizer_state["state"].items():
        for name, value in state.items():
            assert torch.equal(after["state"][key][name], value), name


def test_find_lr_stops_when_the_service_says_stop_and_the_run_is_left_to_look_at(
    keeper: LRKeeper,
) -> None:
    problem = linear_regression()
    finding, _, _ = run_find_lr(keeper, problem, torch.optim.SGD, start_lr=1e-4, num_steps=200)
    # Plain SGD on this regression diverges past lr ≈ 1, long before 10.
    assert finding.stopped
    assert 10 <= finding.steps < 200
    run = keeper.get_run(finding.run_id)
    assert run.status == "finished"
    assert run.step == finding.steps
    assert any(event.kind == "range_test_stop" for event in keeper.events(finding.run_id))
    assert len(finding.curve) == finding.steps
    assert keeper.lr_suggestion(finding.run_id, "valley").lr == finding.lr
