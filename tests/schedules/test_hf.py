"""The ``hf:`` types against transformers' own ``get_scheduler`` on a real torch optimizer.

hypothesis draws each type's params (transformers' refusals included), 1–3 param
groups with different lrs (ints among them: transformers' λs return ints in places,
and torch keeps an int lr times an int an int), an optimizer default lr (what
``hf:polynomial`` and the ``*_min_lr`` types read as ``lr_init``) and up to a few
hundred steps. After construction and after every step the engine's lrs must equal
the optimizer's by ``repr`` (so a last bit, an int for a float or ``-0.0`` all
fail); mid-run the engine is restored from its JSON state. Where transformers
refuses a config the engine refuses it too, naming the field; where transformers
runs but crashes at some step, the engine refuses at creation or fails at that step.

``LRKEEPER_HF_EXAMPLES`` sets the examples per type (default 40).
"""

import copy
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch.optim import lr_scheduler  # noqa: E402

from service.schedules import (  # noqa: E402
    InvalidConfig,
    InvalidStepValue,
    build,
    restore,
    scheduler_types,
)
from service.schedules.huggingface import HF_SCHEDULERS  # noqa: E402
from tests.schedules.torch_oracle import make_scheduler as make_torch_scheduler  # noqa: E402

pytestmark = pytest.mark.torch

EXAMPLES_PER_TYPE = int(os.environ.get("LRKEEPER_HF_EXAMPLES", "40"))
MAX_STEPS = 250
# Every drawn count is below this, so a config that must crash has crashed by then.
CRASH_HORIZON = 600
PLATEAU_TYPE = "hf:reduce_lr_on_plateau"
# get_scheduler's own arguments; the rest of a config's params are the schedule's kwargs,
# but for lr_init, which stands for optimizer.defaults["lr"].
COUNTS = ("num_warmup_steps", "num_training_steps")
READS_DEFAULT_LR = ("hf:polynomial", "hf:cosine_with_min_lr", "hf:cosine_warmup_with_min_lr")


# -- transformers' side ---------------------------------------------------------------


def torch_optimizer(groups: Sequence[Mapping[str, Any]], default_lr: float) -> Any:
    """SGD over one parameter per group, its default lr being what transformers reads."""
    torch_groups = [{"params": [torch.zeros(1, requires_grad=True)], **group} for group in groups]
    return torch.optim.SGD(torch_groups, lr=default_lr)


def transformers_scheduler(config: Mapping[str, Any], optimizer: Any) -> Any:
    """``get_scheduler`` for an ``hf:`` config, composites of them, or a torch class."""
    config_type = config["type"]
    params = dict(config.get("params", {}))
    if config_type in ("SequentialLR", "ChainedScheduler"):
        children = [transformers_scheduler(child, optimizer) for child in params["schedulers"]]
        if config_type == "SequentialLR":
            return lr_scheduler.SequentialLR(optimizer, children, milestones=params["milestones"])
        return lr_scheduler.ChainedScheduler(children, optimizer=optimizer)
    if not config_type.startswith("hf:"):
        return make_torch_scheduler(config, optimizer)
    params.pop("lr_init", None)
    counts = {name: params.pop(name, None) for name in COUNTS}
    return transformers.get_scheduler(
        config_type.removeprefix("hf:"),
        optimizer,
        scheduler_specific_kwargs=params,
        **counts,
    )


@dataclass
class Outcome:
    """The lrs after construction (index 0) and each step, until a failure (if any)."""

    lrs: list[list[str]] = field(default_factory=list)
    failed_at: int | None = None
    failure: str = ""


def exactly(values: Sequence[Any]) -> list[str]:
    return [repr(value) for value in values]


def run_transformers(
    config: Mapping[str, Any],
    groups: Sequence[Mapping[str, Any]],
    default_lr: float,
    steps: int,
    metrics: Sequence[float] | None,
) -> Outcome:
    outcome = Outcome()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scheduler before optimizer; wsd's both-given warning
        try:
            optimizer = torch_optimizer(groups, default_lr)
            scheduler = transformers_scheduler(config, optimizer)
        except Exception as error:  # a refusal is data here
            outcome.failed_at, outcome.failure = 0, f"{type(error).__name__}: {error}"
            return outcome
        for step in range(steps + 1):
            if step > 0:
                try:
                    scheduler.step() if metrics is None else scheduler.step(metrics[step - 1])
                except Exception as error:
                    outcome.failed_at, outcome.failure = step, f"{type(error).__name__}: {error}"
                    return outcome
            outcome.lrs.append(exactly([group["lr"] for group in optimizer.param_groups]))
    return outcome


# -- the engine's side ------------------------------------------------------------------


def run_engine(
    config: Mapping[str, Any],
    groups: Sequence[Mapping[str, Any]],
    steps: int,
    metrics: Sequence[float] | None,
    restore_at: int,
) -> Outcome:
    """Raises InvalidConfig at creation; records an InvalidStepValue as the failing step."""
    monitor = config.get("monitor", "eval_loss")
    scheduler = build(copy.deepcopy(dict(config)), copy.deepcopy(list(groups)))
    outcome = Outcome(lrs=[exactly(scheduler.outcome().lr)])
    for step in range(1, steps + 1):
        if step == restore_at:
            saved = json.loads(json.dumps(scheduler.state(), allow_nan=False))
            scheduler = restore(dict(config), copy.deepcopy(list(groups)), saved)
        try:
            answer = scheduler.step(None if metrics is None else {monitor: metrics[step - 1]})
        except InvalidStepValue as failure:
            assert failure.step == step
            outcome.failed_at, outcome.failure = step, str(failure)
            return outcome
        outcome.lrs.append(exactly(answer.lr))
    return outcome


def assert_engine_equals_transformers(
    config: dict[str, Any],
    groups: list[dict[str, Any]],
    steps: int,
    metrics: Sequence[float] | None = None,
    restore_at: int = 0,
    default_lr: float | None = None,
) -> None:
    if default_lr is None:
        default_lr = config["params"].get("lr_init", groups[0]["lr"])
    expected = run_transformers(config, groups, default_lr, steps, metrics)
    described = f"{config} on {groups}; transformers: {expected.failure or 'ran'}"
    if expected.failed_at == 0:
        with pytest.raises(InvalidConfig):
            build(copy.deepcopy(config), copy.deepcopy(groups))
        return
    try:
        actual = run_engine(config, groups, steps, metrics, restore_at)
    except InvalidConfig as refusal:
        # Refusing at creation what transformers can only crash on later is API.md's rule;
        # the crash may lie past this run's steps, never past the drawn counts' range.
        horizon = CRASH_HORIZON if metrics is None else len(metrics)
        longer = run_transformers(config, groups, default_lr, horizon, metrics)
        if longer.failed_at is None and config["type"] in ("SequentialLR", "ChainedScheduler"):
            # The rule is applied to each child as it would run alone: a child that can only
            # crash later is refused even where SequentialLR hands over before the crash.
            alone = (
                run_transformers(child, groups, default_lr, horizon, metrics)
                for child in config["params"]["schedulers"]
            )
            longer = next((run for run in alone if run.failed_at is not None), longer)
        assert longer.failed_at is not None, f"engine refused ({refusal}): {described}"
        return
    assert actual.lrs == expected.lrs, described
    assert actual.failed_at == expected.failed_at, f"{actual.failure}: {described}"


# -- what hypothesis draws --------------------------------------------------------------

counts = st.integers(-3, 120)
small_real = st.floats(0.0, 1.0, allow_nan=False) | st.sampled_from([0, 1])


@st.composite
def optional(draw: st.DrawFn, name: str, values: st.SearchStrategy[Any]) -> dict[str, Any]:
    """Either no key (transformers' default) or the key with a drawn value."""
    return {name: draw(values)} if draw(st.booleans()) else {}


@st.composite
def warmup_and_training(draw: st.DrawFn, *, required: bool = True) -> dict[str, Any]:
    """Usually both counts; now and then one missing, which get_scheduler refuses."""
    params: dict[str, Any] = {}
    for name in COUNTS:
        present = draw(st.integers(0, 19)) > 0 if required else draw(st.booleans())
        if present:
            params[name] = draw(counts)
    return params


def min_lr_choice() -> st.SearchStrategy[dict[str, Any]]:
    """min_lr, min_lr_rate, both or neither (the last two refused by transformers)."""
    one = st.one_of(
        st.fixed_dictionaries({"min_lr": st.floats(0.0, 0.05)}),
        st.fixed_dictionaries({"min_lr_rate": small_real}),
    )
    refused = st.sampled_from([{}, {"min_lr": 0.001, "min_lr_rate": 0.1}])
    return st.one_of(one, one, one, refused)


def merged(*parts: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(*parts).map(lambda dicts: {k: v for d in dicts for k, v in d.items()})


PARAMS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "hf:linear": warmup_and_training(),
    "hf:cosine": merged(warmup_and_training(), optional("num_cycles", st.floats(0.0, 3.0))),
    "hf:cosine_with_restarts": merged(
        warmup_and_training(), optional("num_cycles", st.integers(0, 5))
    ),
    "hf:polynomial": merged(
        warmup_and_training(),
        optional("lr_end", st.floats(0.0, 0.2) | st.just(0)),
        optional("power", st.floats(-2.0, 4.0) | st.integers(0, 3)),
        optional("lr_init", st.floats(1e-4, 1.0)),
    ),
    "hf:constant": warmup_and_training(required=False),
    "hf:constant_with_warmup": merged(
        st.fixed_dictionaries({"num_warmup_steps": counts}),
        optional("num_training_steps", counts),
    ),
    "hf:inverse_sqrt": merged(
        st.fixed_dictionaries({"num_warmup_steps": counts}),
        optional("timescale", st.integers(-3, 400)),
    ),
    PLATEAU_TYPE: merged(
        optional("mode", st.sampled_from(["min", "max"])),
        optional("factor", st.floats(0.0, 0.9)),
        optional("patience", st.integers(-1, 4)),
        optional("threshold", st.floats(0.0, 0.1)),
        optional("threshold_mode", st.sampled_from(["rel", "abs"])),
        optional("cooldown", st.integers(0, 3)),
        optional("min_lr", st.floats(0.0, 0.01)),
        optional("eps", st.sampled_from([1e-8, 0.0, 1e-3])),
        warmup_and_training(required=False),
    ),
    "hf:cosine_with_min_lr": merged(
        warmup_and_training(),
        optional("num_cycles", st.floats(0.0, 3.0)),
        min_lr_choice(),
        optional("lr_init", st.floats(1e-4, 1.0)),
    ),
    "hf:cosine_warmup_with_min_lr": merged(
        warmup_and_training(),
        optional("num_cycles", st.floats(0.0, 3.0) | st.integers(0, 2)),
        min_lr_choice(),
        optional("warmup_lr_rate", small_real),
        optional("lr_init", st.floats(1e-4, 1.0)),
    ),
    "hf:warmup_stable_decay": merged(
        st.fixed_dictionaries({"num_warmup_steps": counts, "num_decay_steps": counts}),
        optional("num_training_steps", st.integers(-3, 250)),
        optional("num_stable_steps", counts),
        optional("warmup_type", st.sampled_from(["linear", "cosine", "1-sqrt", "step"])),
        optional("decay_type", st.sampled_from(["linear", "cosine", "1-sqrt", "exp"])),
        optional("min_lr_ratio", small_real),
        optional("num_cycles", st.floats(0.0, 3.0)),
    ),
}

# Different lrs per group; ints too (1 and 2), where int · int stays an int in torch.
group_lrs = st.lists(
    st.floats(1e-5, 1.0, allow_nan=False) | st.sampled_from([1, 2, 0.1]), min_size=1, max_size=3
)
plateau_metrics = st.lists(
    st.sampled_from([1.0, 0.9, 0.8, 0.5, 0.5, 0.5, math.nan, math.inf, -math.inf, 2.0]),
    min_size=MAX_STEPS,
    max_size=MAX_STEPS,
)
EXAMPLES = settings(
    max_examples=EXAMPLES_PER_TYPE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- the tests ----------------------------------------------------------------------------


def test_every_scheduler_type_of_transformers_but_greedy_is_served() -> None:
    served = {cls.type_name for cls in HF_SCHEDULERS}
    offered = {f"hf:{kind.value}" for kind in transformers.SchedulerType}
    assert served == offered - {"hf:greedy"}
    assert served == set(PARAMS)
    assert served <= {entry["type"] for entry in scheduler_types()}


@pytest.mark.parametrize("type_name", list(PARAMS))
@EXAMPLES
@given(data=st.data())
def test_values_equal_transformers_at_every_step_and_group(
    type_name: str, data: st.DataObject
) -> None:
    params = data.draw(PARAMS[type_name], label="params")
    lrs = data.draw(group_lrs, label="group lrs")
    steps = data.draw(st.integers(1, MAX_STEPS), label="steps")
    restore_at = data.draw(st.integers(0, steps), label="restore at")
    metrics = data.draw(plateau_metrics, label="metrics") if type_name == PLATEAU_TYPE else None
    groups = [{"lr": lr, "momentum": 0.9} for lr in lrs]
    assert_engine_equals_transformers(
        {"type": type_name, "params": params}, groups, steps, metrics, restore_at
    )


NON_PLATEAU_TYPES = [name for name in PARAMS if name != PLATEAU_TYPE]
torch_children = st.sampled_from(
    [
        {"type": "ExponentialLR", "params": {"gamma": 0.97}},
        {"type": "ConstantLR", "params": {"factor": 0.5, "total_iters": 7}},
        {"type": "LinearLR", "params": {"start_factor": 0.25, "total_iters": 9}},
        {"type": "CosineAnnealingLR", "params": {"T_max": 30}},
    ]
)


@st.composite
def hf_child(draw: st.DrawFn) -> dict[str, Any]:
    type_name = draw(st.sampled_from(NON_PLATEAU_TYPES))
    params = draw(PARAMS[type_name])
    params.pop("lr_init", None)  # one optimizer, one default lr: see with_lr_init
    return {"type": type_name, "params": params}


def with_lr_init(children: list[dict[str, Any]], default_lr: float | None) -> None:
    """Every child that reads the optimizer's default lr gets it, as the client sends it."""
    if default_lr is not None:
        for child in children:
            if child["type"] in READS_DEFAULT_LR:
                child["params"]["lr_init"] = default_lr


@EXAMPLES
@given(data=st.data())
def test_as_sequential_child_equals_torch_sequential_of_transformers(
    data: st.DataObject,
) -> None:
    children = data.draw(
        st.lists(hf_child() | torch_children, min_size=1, max_size=3).filter(
            lambda drawn: any(child["type"].startswith("hf:") for child in drawn)
        ),
        label="children",
    )
    milestones = sorted(
        data.draw(
            st.lists(st.integers(1, 80), min_size=len(children) - 1, max_size=len(children) - 1)
        )
    )
    config = {"type": "SequentialLR", "params": {"schedulers": children, "milestones": milestones}}
    default_lr = data.draw(st.none() | st.floats(1e-4, 1.0), label="default lr")
    with_lr_init(children, default_lr)
    groups = [{"lr": lr, "momentum": 0.9} for lr in data.draw(group_lrs)]
    steps = data.draw(st.integers(1, 150))
    restore_at = data.draw(st.integers(0, steps))
    assert_engine_equals_transformers(config, groups, steps, None, restore_at, default_lr)


@EXAMPLES
@given(data=st.data())
def test_as_chained_child_equals_torch_chain_of_transformers(data: st.DataObject) -> None:
    children = data.draw(
        st.lists(hf_child() | torch_children, min_size=1, max_size=3).filter(
            lambda drawn: any(child["type"].startswith("hf:") for child in drawn)
        ),
        label="children",
    )
    config = {"type": "ChainedScheduler", "params": {"schedulers": children}}
    default_lr = data.draw(st.none() | st.floats(1e-4, 1.0), label="default lr")
    with_lr_init(children, default_lr)
    groups = [{"lr": lr, "momentum": 0.9} for lr in data.draw(group_lrs)]
    steps = data.draw(st.integers(1, 150))
    restore_at = data.draw(st.integers(0, steps))
    assert_engine_equals_transformers(config, groups, steps, None, restore_at, default_lr)


# Each: a config get_scheduler refuses, and the field our refusal must name.
REFUSED = [
    ("hf:linear", {"num_training_steps": 10}, "num_warmup_steps"),
    ("hf:linear", {"num_warmup_steps": 2}, "num_training_steps"),
    ("hf:cosine", {"num_warmup_steps": None, "num_training_steps": 10}, "num_warmup_steps"),
    ("hf:cosine_with_restarts", {"num_warmup_steps": 2}, "num_training_steps"),
    ("hf:constant_with_warmup", {}, "num_warmup_steps"),
    ("hf:inverse_sqrt", {"num_training_steps": 5}, "num_warmup_steps"),
    ("hf:warmup_stable_decay", {"num_decay_steps": 5}, "num_warmup_steps"),
    ("hf:warmup_stable_decay", {"num_warmup_steps": 2, "num_decay_steps": 5}, "num_stable_steps"),
    ("hf:warmup_stable_decay", {"num_warmup_steps": 2, "num_training_steps": 9}, "num_decay_steps"),
    (
        "hf:warmup_stable_decay",
        {"num_warmup_steps": 2, "num_decay_steps": 5, "num_stable_steps": 3, "decay_type": "exp"},
        "decay_type",
    ),
    (
        "hf:warmup_stable_decay",
        {"num_warmup_steps": 2, "num_decay_steps": 5, "num_stable_steps": 3, "warmup_type": "x"},
        "warmup_type",
    ),
    ("hf:polynomial", {"num_warmup_steps": 2, "num_training_steps": 9, "lr_end": 0.5}, "lr_end"),
    ("hf:polynomial", {"num_warmup_steps": 2}, "num_training_steps"),
    ("hf:cosine_with_min_lr", {"num_warmup_steps": 2, "num_training_steps": 9}, "min_lr_rate"),
    (
        "hf:cosine_warmup_with_min_lr",
        {"num_warmup_steps": 2, "num_training_steps": 9, "min_lr": 0.01, "min_lr_rate": 0.1},
        "min_lr",
    ),
    ("hf:cosine", {"num_warmup_steps": 2, "num_training_steps": 9, "power": 2.0}, "power"),
    (PLATEAU_TYPE, {"factor": 1.0}, "factor"),
    (PLATEAU_TYPE, {"mode": "sideways"}, "mode"),
]


@pytest.mark.parametrize(("type_name", "params", "field_name"), REFUSED)
def test_configs_transformers_refuses_are_refused_naming_the_field(
    type_name: str, params: dict[str, Any], field_name: str
) -> None:
    groups = [{"lr": 0.1}, {"lr": 0.05}]
    expected = run_transformers({"type": type_name, "params": params}, groups, 0.1, 1, [1.0])
    assert expected.failed_at == 0, "transformers runs this config: the case proves nothing"
    with pytest.raises(InvalidConfig) as refusal:
        build({"type": type_name, "params": params}, groups)
    assert refusal.value.loc == ("scheduler", "params", field_name), refusal.value


def test_polynomial_reads_lr_init_as_transformers_reads_the_optimizers_default_lr() -> None:
    """Groups at 0.1 and 0.3 under a default lr of 0.2: λ divides by 0.2, not a group's lr."""
    config = {
        "type": "hf:polynomial",
        "params": {"num_warmup_steps": 3, "num_training_steps": 20, "lr_end": 0.01, "lr_init": 0.2},
    }
    groups = [{"lr": 0.1}, {"lr": 0.3}]
    expected = run_transformers(config, groups, 0.2, 25, None)
    assert run_engine(config, groups, 25, None, 0).lrs == expected.lrs
    without_lr_init = {"type": "hf:polynomial", "params": {**config["params"]}}
    del without_lr_init["params"]["lr_init"]
    assert run_engine(without_lr_init, groups, 25, None, 0).lrs != expected.lrs


def test_plateau_as_last_sequential_child_takes_over_as_reduce_lr_on_plateau_does() -> None:
    children = [{"type": "hf:linear", "params": {"num_warmup_steps": 2, "num_training_steps": 8}}]
    plain = {"type": "ReduceLROnPlateau", "params": {"patience": 1}}
    hf = {"type": PLATEAU_TYPE, "params": {"patience": 1}, "monitor": "val_loss"}
    runs = []
    for last in (plain, hf):
        config = {
            "type": "SequentialLR",
            "params": {"schedulers": [*children, last], "milestones": [5]},
        }
        scheduler = build(config, [{"lr": 0.1}])
        runs.append([scheduler.step({"val_loss": 1.0}).lr for _ in range(12)])
    assert runs[0] == runs[1]
    assert len({tuple(lr) for lr in runs[0]}) > 3
