"""Scheduler configs in, scheduler objects out: the engine's one entry point.

A config is ``{"type": <torch class name>, "params": {...}, "monitor"?: str}`` (or
``"hf:<transformers SchedulerType>"``, with ``get_scheduler``'s keyword arguments);
its parameter model is the class's ``Params`` dataclass (torch's keyword names,
annotations and defaults, without ``optimizer``, ``verbose`` and ``last_epoch`` —
resuming is ``restore``'s job, so ``last_epoch`` is an unknown parameter here).
This module does the generic checks (unknown or missing keys, JSON types against
the annotations, the param groups); each class does torch's specific ones. Every
refusal is an ``InvalidConfig`` whose ``loc`` starts at ``"scheduler"`` or
``"param_groups"``, also for errors deep inside a composite's children.

``restore`` runs on every step report, so what depends only on the class is worked
out once per class (``_param_specs``: the fields, their defaults, and a checker
compiled from each annotation); each call still checks every value it is given.
"""

import copy
import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple, TypeVar

from service.schedules.base import Group, Scheduler, describe_failure
from service.schedules.codec import decode_floats
from service.schedules.composite import ChainedScheduler, SequentialLR
from service.schedules.cosine import CosineAnnealingLR, CosineAnnealingWarmRestarts
from service.schedules.cyclic import CyclicLR, OneCycleLR
from service.schedules.decay import (
    ConstantLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    MultiplicativeLR,
    MultiStepLR,
    PolynomialLR,
    StepLR,
)
from service.schedules.errors import ExpressionError, InvalidConfig, InvalidStepValue
from service.schedules.huggingface import HF_SCHEDULERS
from service.schedules.plateau import ReduceLROnPlateau
from service.schedules.range_test import LRRangeTest

SchedulerClass = type[Scheduler]
T = TypeVar("T")

SCHEDULER_TYPES: dict[str, SchedulerClass] = {
    cls.type_name: cls
    for cls in (
        LambdaLR,
        MultiplicativeLR,
        StepLR,
        MultiStepLR,
        ConstantLR,
        LinearLR,
        ExponentialLR,
        PolynomialLR,
        CosineAnnealingLR,
        CosineAnnealingWarmRestarts,
        CyclicLR,
        OneCycleLR,
        ReduceLROnPlateau,
        SequentialLR,
        ChainedScheduler,
        LRRangeTest,
        *HF_SCHEDULERS,
    )
}

CONFIG_KEYS = ("type", "params", "monitor")
# The one annotation that means "nested scheduler configs": the registry builds them.
CHILDREN_FIELD = "schedulers"


# -- public surface -----------------------------------------------------------------


def build(config: Any, param_groups: Any) -> Scheduler:
    """Validate ``config`` against ``param_groups``, then do what torch's constructor does.

    The groups are deep-copied: the scheduler owns and mutates its own list.
    """
    groups = validate_param_groups(param_groups)
    scheduler = _rooted(lambda: _instantiate(config, groups))
    try:
        scheduler.start()
    except (ArithmeticError, ExpressionError, InvalidStepValue) as exc:
        # torch's constructor itself would crash (its construction step divides by zero).
        raise InvalidConfig(
            ("scheduler",),
            f"torch's constructor would fail on this config: {describe_failure(exc)}",
        ) from None
    return scheduler


def restore(config: Any, param_groups: Any, state: Mapping[str, Any]) -> Scheduler:
    """The scheduler whose ``state()`` was saved, ready to continue bit-exactly.

    Built from the same config and original groups (so derived values are recomputed),
    without torch's construction side effects; then the saved fields and groups are put in.

    The original groups are checked as ``build`` checks them but not copied: constructors
    only read the groups (their number and keys; ``start()``, which writes them, is not
    called here), and the scheduler is then given fresh containers decoded from the state.
    """
    check_param_groups(param_groups)
    groups = list(param_groups)
    scheduler = _rooted(lambda: _instantiate(config, groups))
    scheduler.load_own_state(state)
    groups[:] = decode_floats(list(state["param_groups"]))
    return scheduler


def normalize_config(config: Any) -> dict[str, Any]:
    """The config with every default filled in, so that equal schedules compare equal.

    Lists stay as given (a per-group list is not collapsed), ``monitor`` is filled in
    for metric-driven types, children are normalized recursively. Only the generic
    checks run here (the class checks need the param groups; ``build`` does them).
    """
    return _rooted(lambda: _normalize(config))


def scheduler_types() -> list[dict[str, Any]]:
    """Every type with its parameters (name, annotation, required, default): JSON-able."""
    described = []
    for type_name, cls in SCHEDULER_TYPES.items():
        specs = _param_specs(cls).values()
        entry: dict[str, Any] = {
            "type": type_name,
            "params": [
                {
                    "name": spec.name,
                    "type": spec.description,
                    "required": spec.required,
                    "default": None if spec.required else _default_of(spec.field),
                }
                for spec in specs
            ],
            "uses_metric": _default_monitor(cls) is not None,
        }
        if _default_monitor(cls) is not None:
            entry["default_monitor"] = _default_monitor(cls)
        # A composite may hold a momentum-cycling child.
        entry["cycles_momentum_possible"] = any(
            spec.name in ("cycle_momentum", CHILDREN_FIELD) for spec in specs
        )
        described.append(entry)
    return described


# -- param groups -------------------------------------------------------------------


def validate_param_groups(param_groups: Any) -> list[Group]:
    """A deep copy of the groups after checking what the schedulers read from them."""
    check_param_groups(param_groups)
    groups = copy.deepcopy(param_groups)
    for group in groups:
        if "betas" in group:
            group["betas"] = list(group["betas"])
    return groups


def check_param_groups(param_groups: Any) -> None:
    """Refuse groups the schedulers cannot read: no lr, non-numbers, malformed betas."""
    if not isinstance(param_groups, list) or not param_groups:
        raise InvalidConfig(("param_groups",), "expected a non-empty list of param groups")
    for index, group in enumerate(param_groups):
        if not isinstance(group, dict):
            raise InvalidConfig(("param_groups", index), "a param group must be an object")
        if "lr" not in group:
            raise InvalidConfig(("param_groups", index, "lr"), "every param group needs an lr")
        if not _is_finite_number(group["lr"]) or group["lr"] < 0:
            raise InvalidConfig(("param_groups", index, "lr"), "lr must be a finite number ≥ 0")
        for key in ("momentum", "initial_lr"):
            if key in group and not _is_finite_number(group[key]):
                raise InvalidConfig(("param_groups", index, key), f"{key} must be a finite number")
        if "betas" in group:
            betas = group["betas"]
            if (
                not isinstance(betas, list | tuple)
                or len(betas) != 2
                or not all(_is_finite_number(beta) for beta in betas)
            ):
                raise InvalidConfig(
                    ("param_groups", index, "betas"), "betas must be a list of two numbers"
                )


# -- parsing ------------------------------------------------------------------------


def _rooted(action: Callable[[], T]) -> T:
    """Run ``action``, moving config-relative error locations under ``"scheduler"``."""
    try:
        return action()
    except InvalidConfig as exc:
        if exc.loc[:1] == ("param_groups",):
            raise
        raise exc.nested("scheduler") from None


def _instantiate(config: Any, groups: list[Group]) -> Scheduler:
    """One scheduler (children first) from a config; locs relative to ``config``."""
    cls, params, monitor = _parse(config)
    keywords: dict[str, Any] = {}
    if monitor is not None:
        keywords["monitor"] = monitor
    if hasattr(params, CHILDREN_FIELD):
        keywords["children"] = [
            _in_child(index, lambda child=child: _instantiate(child, groups))
            for index, child in enumerate(getattr(params, CHILDREN_FIELD))
        ]
    return cls(groups, params, **keywords)


def _normalize(config: Any) -> dict[str, Any]:
    cls, params, monitor = _parse(config)
    values = {field.name: getattr(params, field.name) for field in dataclasses.fields(params)}
    if CHILDREN_FIELD in values:
        values[CHILDREN_FIELD] = [
            _in_child(index, lambda child=child: _normalize(child))
            for index, child in enumerate(values[CHILDREN_FIELD])
        ]
    normalized: dict[str, Any] = {"type": cls.type_name, "params": copy.deepcopy(values)}
    if monitor is not None:
        normalized["monitor"] = monitor
    return normalized


def _in_child(index: int, action: Callable[[], T]) -> T:
    try:
        return action()
    except InvalidConfig as exc:
        if exc.loc[:1] == ("param_groups",):
            raise
        raise exc.nested("params", CHILDREN_FIELD, index) from None


def _parse(config: Any) -> tuple[SchedulerClass, Any, str | None]:
    """The class, its ``Params`` instance and the monitor (None for metric-free types)."""
    if not isinstance(config, dict):
        raise InvalidConfig((), "a scheduler config must be an object with type and params")
    for key in config:
        if key not in CONFIG_KEYS:
            raise InvalidConfig((key,), f"unknown key {key!r}; expected type, params, monitor")
    type_name = config.get("type")
    if not isinstance(type_name, str):
        raise InvalidConfig(("type",), "type is required: a scheduler class name")
    cls = SCHEDULER_TYPES.get(type_name)
    if cls is None:
        raise InvalidConfig(
            ("type",), f"unknown scheduler type {type_name!r}; known: {', '.join(SCHEDULER_TYPES)}"
        )
    raw_params = config.get("params", {})
    if not isinstance(raw_params, dict):
        raise InvalidConfig(("params",), "params must be an object")
    return cls, _parse_params(cls, raw_params), _parse_monitor(cls, config)


def _parse_monitor(cls: SchedulerClass, config: dict[str, Any]) -> str | None:
    default = _default_monitor(cls)
    if "monitor" not in config:
        return default
    if default is None:
        raise InvalidConfig(
            ("monitor",),
            f"{cls.type_name} reads no metric; monitor is only for metric-driven types",
        )
    monitor = config["monitor"]
    if not isinstance(monitor, str) or not monitor:
        raise InvalidConfig(("monitor",), "monitor must be a non-empty metric name")
    return monitor


def _parse_params(cls: SchedulerClass, raw_params: dict[str, Any]) -> Any:
    specs = _param_specs(cls)
    for name in raw_params:
        if name not in specs:
            known = ", ".join(specs)
            raise InvalidConfig(
                ("params", name), f"unknown parameter {name!r} for {cls.type_name}; known: {known}"
            )
    values: dict[str, Any] = {}
    for spec in specs.values():
        if spec.name not in raw_params:
            if spec.required:
                raise InvalidConfig(("params", spec.name), f"{spec.name} is required")
            continue
        value = raw_params[spec.name]
        if not spec.accepts(value):
            raise InvalidConfig(
                ("params", spec.name),
                f"expected {spec.description}, got {_describe_value(value)}",
            )
        values[spec.name] = _json_copy(value)
    return cls.Params(**values)  # type: ignore[attr-defined]


def _json_copy(value: Any) -> Any:
    """``copy.deepcopy`` for JSON values, without its memo: new lists and dicts throughout.

    Anything else (only possible inside a ``dict`` parameter) still goes to deepcopy.
    """
    kind = type(value)
    if kind is int or kind is float or kind is str or kind is bool or value is None:
        return value
    if kind is list:
        return [_json_copy(item) for item in value]
    if kind is dict:
        return {key: _json_copy(item) for key, item in value.items()}
    return copy.deepcopy(value)


# -- annotations --------------------------------------------------------------------


class _ParamSpec(NamedTuple):
    """One field of a class's ``Params``, with what checking a value against it needs."""

    name: str
    field: dataclasses.Field[Any]
    required: bool
    accepts: Callable[[Any], bool]
    description: str


@functools.cache
def _param_specs(cls: SchedulerClass) -> dict[str, _ParamSpec]:
    """The class's parameters by name, in declaration order; resolved once per class
    (callers only read the dict).

    ``typing.get_type_hints`` and walking the annotations cost more than checking the
    values, and only depend on the class.
    """
    params_cls = cls.Params  # type: ignore[attr-defined]
    hints = typing.get_type_hints(params_cls)
    return {
        field.name: _ParamSpec(
            name=field.name,
            field=field,
            required=_is_required(field),
            accepts=_checker(hints[field.name]),
            description=_describe_annotation(hints[field.name]),
        )
        for field in dataclasses.fields(params_cls)
    }


def _is_required(field: dataclasses.Field[Any]) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _default_of(field: dataclasses.Field[Any]) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _default_monitor(cls: SchedulerClass) -> str | None:
    return getattr(cls, "default_monitor", None)


def _is_finite_number(value: Any) -> bool:
    kind = type(value)  # exact float and int first: nearly every value checked is one
    if kind is float:
        return math.isfinite(value)
    if kind is int:
        return True
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (isinstance(value, int) or math.isfinite(value))
    )


def _checker(hint: Any) -> Callable[[Any], bool]:
    """The test whether a JSON value fits ``hint``: an int fits float, a bool only bool.

    Non-finite floats fit nothing: torch would accept them, but no schedule is left.
    The annotation is read once, here; the returned test only looks at values.
    """
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return _any_of(tuple(_checker(option) for option in typing.get_args(hint)))
    if origin is Literal:
        options = typing.get_args(hint)
        return lambda value: any(
            value == option and type(value) is type(option) for option in options
        )
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        return _list_of(_checker(item_hint))
    if hint is type(None):
        return lambda value: value is None
    if hint is bool:
        return lambda value: isinstance(value, bool)
    if hint is int:
        return lambda value: isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return _is_finite_number
    if hint is str:
        return lambda value: isinstance(value, str)
    if hint is dict or origin is dict:
        return lambda value: isinstance(value, dict)
    raise TypeError(f"unsupported parameter annotation {hint!r}")


def _any_of(checks: tuple[Callable[[Any], bool], ...]) -> Callable[[Any], bool]:
    def fits_one(value: Any) -> bool:
        return any(check(value) for check in checks)

    return fits_one


def _list_of(check_item: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def fits_every_item(value: Any) -> bool:
        if not isinstance(value, list):
            return False
        return all(check_item(item) for item in value)

    return fits_every_item


def _describe_annotation(hint: Any) -> str:
    """``float | list[float]``, ``int | None``, ``'min' | 'max'``: readable and stable."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return " | ".join(_describe_annotation(option) for option in typing.get_args(hint))
    if origin is Literal:
        return " | ".join(repr(option) for option in typing.get_args(hint))
    if origin is list:
        return f"list[{_describe_annotation(typing.get_args(hint)[0])}]"
    if hint is type(None):
        return "None"
    if origin is dict:
        return "dict"
    return hint.__name__


def _describe_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"non-finite number {value}"
    if isinstance(value, int | float):
        return f"{type(value).__name__} {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "a list with an unexpected element" if value else "a list"
    return "an object"
