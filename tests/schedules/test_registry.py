"""The registry: every refusal names its field, defaults normalize, types describe themselves."""

import copy
import json
import math
from typing import Any

import pytest

from service.schedules import (
    InvalidConfig,
    build,
    normalize_config,
    restore,
    scheduler_types,
)

SGD_GROUPS = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.01, "momentum": 0.0}]
STEP = {"type": "StepLR", "params": {"step_size": 3}}
API_TYPES = [
    "LambdaLR",
    "MultiplicativeLR",
    "StepLR",
    "MultiStepLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "PolynomialLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "OneCycleLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "ChainedScheduler",
    "LRRangeTest",
    # API.md's "Hugging Face's schedules": hf: and transformers' SchedulerType values.
    "hf:linear",
    "hf:cosine",
    "hf:cosine_with_restarts",
    "hf:polynomial",
    "hf:constant",
    "hf:constant_with_warmup",
    "hf:inverse_sqrt",
    "hf:reduce_lr_on_plateau",
    "hf:cosine_with_min_lr",
    "hf:cosine_warmup_with_min_lr",
    "hf:warmup_stable_decay",
]


def refusal_loc(config: Any, groups: Any = SGD_GROUPS) -> tuple[Any, ...]:
    with pytest.raises(InvalidConfig) as caught:
        build(config, groups)
    assert caught.value.message
    return caught.value.loc


def loc_id(value: Any) -> str:
    return json.dumps(value, default=str)[:70]


# -- param groups ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("groups", "loc"),
    [
        ({"lr": 0.1}, ("param_groups",)),
        ([], ("param_groups",)),
        ([0.1], ("param_groups", 0)),
        ([{"momentum": 0.9}], ("param_groups", 0, "lr")),
        ([{"lr": 0.1}, {"lr": -0.01}], ("param_groups", 1, "lr")),
        ([{"lr": True}], ("param_groups", 0, "lr")),
        ([{"lr": "0.1"}], ("param_groups", 0, "lr")),
        ([{"lr": None}], ("param_groups", 0, "lr")),
        ([{"lr": math.nan}], ("param_groups", 0, "lr")),
        ([{"lr": 0.1}, {"lr": math.inf}], ("param_groups", 1, "lr")),
        ([{"lr": 0.1, "momentum": "0.9"}], ("param_groups", 0, "momentum")),
        ([{"lr": 0.1, "momentum": False}], ("param_groups", 0, "momentum")),
        ([{"lr": 0.1, "betas": [0.9]}], ("param_groups", 0, "betas")),
        ([{"lr": 0.1, "betas": [0.9, "0.999"]}], ("param_groups", 0, "betas")),
        ([{"lr": 0.1, "betas": 0.9}], ("param_groups", 0, "betas")),
        ([{"lr": 0.1, "initial_lr": "x"}], ("param_groups", 0, "initial_lr")),
    ],
    ids=loc_id,
)
def test_invalid_param_groups_are_refused_naming_the_group_and_key(
    groups: Any, loc: tuple[Any, ...]
) -> None:
    assert refusal_loc(STEP, groups) == loc


def test_param_group_refusal_inside_a_child_stays_rooted_at_param_groups() -> None:
    cyclic = {"type": "CyclicLR", "params": {"base_lr": 0.01, "max_lr": 0.1}}
    composite = {
        "type": "SequentialLR",
        "params": {"schedulers": [STEP, cyclic], "milestones": [5]},
    }
    assert refusal_loc(composite, [{"lr": 0.1}]) == ("param_groups", 0, "momentum")


def test_zero_lr_and_extra_group_keys_are_accepted_and_kept() -> None:
    groups = [{"lr": 0, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": True}]
    scheduler = build(STEP, groups)
    assert scheduler.groups[0]["weight_decay"] == 1e-4
    assert scheduler.groups[0]["nesterov"] is True


def test_build_copies_the_callers_groups() -> None:
    groups = [{"lr": 0.1, "betas": [0.9, 0.999]}]
    original = copy.deepcopy(groups)
    scheduler = build({"type": "ConstantLR", "params": {"factor": 0.5}}, groups)
    scheduler.step()
    assert groups == original
    assert scheduler.outcome().lr == [0.05]


# -- config ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "loc"),
    [
        ("StepLR", ()),
        (None, ()),
        ({**STEP, "extra": 1}, ("extra",)),
        ({"params": {"step_size": 3}}, ("type",)),
        ({"type": 5, "params": {}}, ("type",)),
        ({"type": "SWALR", "params": {}}, ("type",)),
        ({"type": "steplr", "params": {"step_size": 3}}, ("type",)),
        ({"type": "StepLR", "params": [3]}, ("params",)),
        ({"type": "StepLR", "params": {}}, ("params", "step_size")),
        ({"type": "StepLR", "params": {"step_size": 3, "last_epoch": 5}}, ("params", "last_epoch")),
        ({"type": "StepLR", "params": {"step_size": 3, "verbose": True}}, ("params", "verbose")),
        ({"type": "StepLR", "params": {"step_size": 3, "optimizer": {}}}, ("params", "optimizer")),
        ({"type": "StepLR", "params": {"step_size": 3.0}}, ("params", "step_size")),
        ({"type": "StepLR", "params": {"step_size": True}}, ("params", "step_size")),
        ({"type": "StepLR", "params": {"step_size": "3"}}, ("params", "step_size")),
        ({"type": "StepLR", "params": {"step_size": 3, "gamma": "0.1"}}, ("params", "gamma")),
        ({"type": "StepLR", "params": {"step_size": 3, "gamma": False}}, ("params", "gamma")),
        ({"type": "StepLR", "params": {"step_size": 3, "gamma": None}}, ("params", "gamma")),
        ({"type": "StepLR", "params": {"step_size": 3, "gamma": math.nan}}, ("params", "gamma")),
        ({"type": "ExponentialLR", "params": {"gamma": math.inf}}, ("params", "gamma")),
        ({"type": "MultiStepLR", "params": {"milestones": [1, 2.5]}}, ("params", "milestones")),
        ({"type": "MultiStepLR", "params": {"milestones": 3}}, ("params", "milestones")),
        ({"type": "LambdaLR", "params": {"lr_lambda": 0.5}}, ("params", "lr_lambda")),
        ({"type": "LambdaLR", "params": {"lr_lambda": ["1", 2]}}, ("params", "lr_lambda")),
        (
            {"type": "CyclicLR", "params": {"base_lr": 0.1, "max_lr": 1, "cycle_momentum": 1}},
            ("params", "cycle_momentum"),
        ),
        (
            {"type": "OneCycleLR", "params": {"max_lr": 1, "total_steps": "9"}},
            ("params", "total_steps"),
        ),
        ({**STEP, "monitor": "val_loss"}, ("monitor",)),
        ({"type": "ReduceLROnPlateau", "params": {}, "monitor": ""}, ("monitor",)),
        ({"type": "ReduceLROnPlateau", "params": {}, "monitor": 3}, ("monitor",)),
        (
            {"type": "SequentialLR", "params": {"schedulers": STEP, "milestones": []}},
            ("params", "schedulers"),
        ),
        (
            {"type": "ChainedScheduler", "params": {"schedulers": [STEP, "StepLR"]}},
            ("params", "schedulers"),
        ),
        (
            {"type": "ChainedScheduler", "params": {"schedulers": [STEP, {"params": {}}]}},
            ("params", "schedulers", 1, "type"),
        ),
        (
            {"type": "ChainedScheduler", "params": {"schedulers": [STEP, {"type": "StepLR"}]}},
            ("params", "schedulers", 1, "params", "step_size"),
        ),
        (
            {
                "type": "SequentialLR",
                "params": {
                    "milestones": [],
                    "schedulers": [
                        {
                            "type": "ChainedScheduler",
                            "params": {
                                "schedulers": [
                                    STEP,
                                    {"type": "StepLR", "params": {"step_size": 0}},
                                ]
                            },
                        }
                    ],
                },
            },
            ("params", "schedulers", 0, "params", "schedulers", 1, "params", "step_size"),
        ),
    ],
    ids=loc_id,
)
def test_invalid_configs_are_refused_naming_the_field(config: Any, loc: tuple[Any, ...]) -> None:
    assert refusal_loc(config) == ("scheduler", *loc)


@pytest.mark.parametrize(
    ("config", "loc"),
    [
        ({"type": "StepLR", "params": {"step_size": 0}}, ("params", "step_size")),
        ({"type": "ConstantLR", "params": {"factor": 0}}, ("params", "factor")),
        ({"type": "ConstantLR", "params": {"factor": 1.2}}, ("params", "factor")),
        ({"type": "LinearLR", "params": {"start_factor": 0.0}}, ("params", "start_factor")),
        ({"type": "LinearLR", "params": {"end_factor": 1.5}}, ("params", "end_factor")),
        ({"type": "PolynomialLR", "params": {"power": -2}}, ("params", "power")),
        ({"type": "LambdaLR", "params": {"lr_lambda": ["1", "1", "1"]}}, ("params", "lr_lambda")),
        ({"type": "LambdaLR", "params": {"lr_lambda": "math.log(epoch)"}}, ("params", "lr_lambda")),
        ({"type": "CosineAnnealingLR", "params": {"T_max": 0}}, ("params", "T_max")),
        ({"type": "ReduceLROnPlateau", "params": {"factor": 1.0}}, ("params", "factor")),
    ],
    ids=loc_id,
)
def test_class_refusals_are_rooted_at_scheduler(config: Any, loc: tuple[Any, ...]) -> None:
    assert refusal_loc(config) == ("scheduler", *loc)
    nested = {"type": "ChainedScheduler", "params": {"schedulers": [STEP, config]}}
    if config["type"] != "ReduceLROnPlateau":
        assert refusal_loc(nested) == ("scheduler", "params", "schedulers", 1, *loc)


def test_int_where_float_is_annotated_is_kept_as_int() -> None:
    normalized = normalize_config({"type": "ExponentialLR", "params": {"gamma": 1}})
    assert type(normalized["params"]["gamma"]) is int


# -- normalize_config -----------------------------------------------------------------


def test_spelled_out_defaults_normalize_equal_to_omitted_ones() -> None:
    short = {"type": "CosineAnnealingLR", "params": {"T_max": 10}}
    spelled = {"type": "CosineAnnealingLR", "params": {"T_max": 10, "eta_min": 0.0}}
    assert normalize_config(short) == normalize_config(spelled)
    assert normalize_config(short) == {
        "type": "CosineAnnealingLR",
        "params": {"T_max": 10, "eta_min": 0.0},
    }


def test_params_may_be_omitted_when_all_have_defaults() -> None:
    assert normalize_config({"type": "ConstantLR"}) == {
        "type": "ConstantLR",
        "params": {"factor": 1.0 / 3, "total_iters": 5},
    }


def test_monitor_is_filled_for_metric_types_only() -> None:
    assert normalize_config({"type": "ReduceLROnPlateau"})["monitor"] == "val_loss"
    range_test = {"type": "LRRangeTest", "params": {"start_lr": 1e-5, "end_lr": 1, "num_steps": 9}}
    assert normalize_config(range_test)["monitor"] == "loss"
    custom = {"type": "ReduceLROnPlateau", "monitor": "val_acc", "params": {"mode": "max"}}
    assert normalize_config(custom)["monitor"] == "val_acc"
    assert "monitor" not in normalize_config(STEP)


def test_lists_stay_lists_and_children_are_normalized() -> None:
    plateau = {"type": "ReduceLROnPlateau", "params": {"min_lr": [0.0, 0.001]}}
    config = {
        "type": "SequentialLR",
        "params": {
            "schedulers": [{"type": "LambdaLR", "params": {"lr_lambda": ["1", "1"]}}, plateau],
            "milestones": [4],
        },
    }
    before = copy.deepcopy(config)
    normalized = normalize_config(config)
    assert config == before
    first, last = normalized["params"]["schedulers"]
    assert first == {"type": "LambdaLR", "params": {"lr_lambda": ["1", "1"]}}
    assert last["params"]["min_lr"] == [0.0, 0.001]
    assert last["params"]["patience"] == 10
    assert last["monitor"] == "val_loss"
    assert normalize_config(normalized) == normalized
    json.dumps(normalized, allow_nan=False)


def test_normalize_refuses_with_the_same_locs_as_build() -> None:
    with pytest.raises(InvalidConfig) as caught:
        normalize_config({"type": "ChainedScheduler", "params": {"schedulers": [{"type": "X"}]}})
    assert caught.value.loc == ("scheduler", "params", "schedulers", 0, "type")


def test_normalized_config_builds_the_same_schedule() -> None:
    config = {"type": "LinearLR", "params": {"total_iters": 7}}
    original, normalized = build(config, SGD_GROUPS), build(normalize_config(config), SGD_GROUPS)
    for _ in range(10):
        assert original.step().lr == normalized.step().lr


# -- scheduler_types ------------------------------------------------------------------


def test_scheduler_types_lists_every_api_type_in_order_as_json() -> None:
    described = scheduler_types()
    assert [entry["type"] for entry in described] == API_TYPES
    assert json.loads(json.dumps(described, allow_nan=False)) == described


def test_scheduler_types_describe_parameters_with_torch_names_and_defaults() -> None:
    by_type = {entry["type"]: entry for entry in scheduler_types()}
    assert by_type["StepLR"]["params"] == [
        {"name": "step_size", "type": "int", "required": True, "default": None},
        {"name": "gamma", "type": "float", "required": False, "default": 0.1},
    ]
    cyclic_params = {param["name"]: param for param in by_type["CyclicLR"]["params"]}
    assert cyclic_params["base_lr"]["type"] == "float | list[float]"
    assert cyclic_params["step_size_down"]["type"] == "int | None"
    assert by_type["SequentialLR"]["params"][0]["type"] == "list[dict]"
    assert by_type["LambdaLR"]["params"][0]["type"] == "str | list[str]"
    for entry in scheduler_types():
        names = {param["name"] for param in entry["params"]}
        assert not names & {"optimizer", "verbose", "last_epoch"}, entry["type"]


def test_scheduler_types_flag_metrics_and_momentum() -> None:
    by_type = {entry["type"]: entry for entry in scheduler_types()}
    assert by_type["ReduceLROnPlateau"]["uses_metric"] is True
    assert by_type["ReduceLROnPlateau"]["default_monitor"] == "val_loss"
    assert by_type["LRRangeTest"]["default_monitor"] == "loss"
    assert by_type["StepLR"]["uses_metric"] is False and "default_monitor" not in by_type["StepLR"]
    assert by_type["CyclicLR"]["cycles_momentum_possible"] is True
    assert by_type["OneCycleLR"]["cycles_momentum_possible"] is True
    assert by_type["ChainedScheduler"]["cycles_momentum_possible"] is True
    assert by_type["ExponentialLR"]["cycles_momentum_possible"] is False


# -- restore --------------------------------------------------------------------------


def test_restore_carries_non_finite_state_through_strict_json() -> None:
    config = {"type": "ReduceLROnPlateau", "params": {"patience": 1}}
    original = build(config, SGD_GROUPS)
    saved = json.loads(json.dumps(original.state(), allow_nan=False))
    assert saved["best"] == "Infinity"
    restored = restore(config, SGD_GROUPS, saved)
    for loss in [1.0, math.nan, 2.0, 2.0, 0.5, math.inf]:
        assert restored.step(loss).lr == original.step(loss).lr
    assert restored.state() == original.state()


def test_restore_puts_the_saved_groups_into_the_scheduler() -> None:
    config = {"type": "ExponentialLR", "params": {"gamma": 0.5}}
    original = build(config, SGD_GROUPS)
    original.step()
    original.set_lr([0.3, 0.2])
    restored = restore(config, SGD_GROUPS, json.loads(json.dumps(original.state())))
    assert restored.lrs() == [0.3, 0.2]
    assert restored.step().lr == [0.15, 0.1]
    assert restored.outcome().step == 2


REFUSED_ALIKE = [
    (STEP, {"lr": 0.1}),
    (STEP, [{"lr": 0.1}, {"lr": math.inf}]),
    (STEP, [{"lr": 0.1, "betas": [0.9, "0.999"]}]),
    ({**STEP, "extra": 1}, SGD_GROUPS),
    ({"type": "StepLR", "params": {}}, SGD_GROUPS),
    ({"type": "StepLR", "params": {"step_size": 3, "gamma": False}}, SGD_GROUPS),
    ({"type": "MultiStepLR", "params": {"milestones": [1, 2.5]}}, SGD_GROUPS),
    ({"type": "StepLR", "params": {"step_size": 0}}, SGD_GROUPS),
    ({"type": "LambdaLR", "params": {"lr_lambda": "math.log(epoch)"}}, SGD_GROUPS),
    ({"type": "LambdaLR", "params": {"lr_lambda": "epoch +"}}, SGD_GROUPS),
    ({"type": "CyclicLR", "params": {"base_lr": 0.01, "max_lr": 0.1}}, [{"lr": 0.1}]),
    ({"type": "ReduceLROnPlateau", "params": {}, "monitor": ""}, SGD_GROUPS),
    (
        {"type": "ChainedScheduler", "params": {"schedulers": [STEP, {"type": "StepLR"}]}},
        SGD_GROUPS,
    ),
]


@pytest.mark.parametrize(("config", "groups"), REFUSED_ALIKE, ids=loc_id)
def test_restore_refuses_what_build_refuses_with_the_same_loc_and_message(
    config: Any, groups: Any
) -> None:
    state = build(STEP, SGD_GROUPS).state()
    with pytest.raises(InvalidConfig) as built:
        build(config, groups)
    with pytest.raises(InvalidConfig) as restored:
        restore(config, groups, state)
    assert (restored.value.loc, restored.value.message) == (built.value.loc, built.value.message)


def test_restored_scheduler_leaves_config_groups_and_state_untouched() -> None:
    cyclic = {"type": "CyclicLR", "params": {"base_lr": [0.01, 0.02], "max_lr": 0.1}}
    config = {"type": "SequentialLR", "params": {"schedulers": [STEP, cyclic], "milestones": [2]}}
    groups = [{"lr": 0.1, "betas": [0.9, 0.999]}, {"lr": 0.01, "betas": [0.8, 0.99]}]
    original = build(config, groups)
    original.step()
    state = json.loads(json.dumps(original.state()))
    inputs = copy.deepcopy((config, groups, state))
    restored = restore(config, groups, state)
    for _ in range(5):
        restored.step()
    restored.set_lr([0.5, 0.5])
    assert (config, groups, state) == inputs
