"""Generate the golden parity files: ``python -m tests.schedules.make_golden``.

Draws scheduler configs of every torch type (and composites of them) from a fixed
seed, runs each in real torch 2.13.0 (tests/schedules/torch_oracle.py) and writes
what torch's param groups held after every step to ``golden/<type>.json.gz``, plus
the configs torch refuses to ``golden/rejections.json.gz``. The golden test then
replays those cases on the engine without torch.

The case space (``draw_case``) is written against a small ``Chooser`` protocol so
that the live property test draws from the very same space through hypothesis.
Importing this module needs no torch; only ``main()`` does.

Floats survive the files exactly: Python's ``json`` writes ``repr(float)``,
which reads back to the same double, and NaN / ±inf as ``NaN`` / ``Infinity``.
Each type's cases come from their own seed (the base seed and the type name), so
retuning one type leaves the others' files byte for byte as they were.
"""

import argparse
import copy
import gzip
import json
import math
import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

GOLDEN_DIR = Path(__file__).parent / "golden"
REJECTIONS_FILE = "rejections.json.gz"
BASE_SEED = 20261123
CASES_PER_TYPE = 40
LONG_CASES_PER_TYPE = 2
LONG_STEPS = 3000
MAX_DEPTH = 2  # composites inside composites inside the root

LEAF_TYPES = (
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
)
FAMILIES = (*LEAF_TYPES, "ReduceLROnPlateau", "SequentialLR", "ChainedScheduler")

T = TypeVar("T")
Config = dict[str, Any]
Groups = list[dict[str, Any]]


class Chooser(Protocol):
    """Where a case's random choices come from: a seeded ``random.Random`` or hypothesis."""

    def integer(self, low: int, high: int) -> int: ...

    def real(self, low: float, high: float) -> float: ...

    def choice(self, options: Sequence[T]) -> T: ...

    def flag(self, probability: float) -> bool: ...

    def bulk_rng(self) -> random.Random:
        """A generator for long value sequences (metrics), drawn as a single seed."""
        ...


class RandomChooser:
    """The golden files' chooser: reproducible from one seed."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def integer(self, low: int, high: int) -> int:
        return self._rng.randint(low, high)

    def real(self, low: float, high: float) -> float:
        return self._rng.uniform(low, high)

    def choice(self, options: Sequence[T]) -> T:
        return options[self._rng.randrange(len(options))]

    def flag(self, probability: float) -> bool:
        return self._rng.random() < probability

    def bulk_rng(self) -> random.Random:
        return random.Random(self._rng.getrandbits(64))


# -- the case ------------------------------------------------------------------------------------


@dataclass
class Case:
    """One parity scenario and, once torch has run it, torch's values.

    ``expected_lr[k]`` / ``expected_momentum[k]`` are the groups' values after step k
    (k = 0: right after construction). ``lr_edits[k]`` is a hand edit of every group's
    lr made right after step k; ``restore_after`` lists the steps after which the
    engine is rebuilt from its JSON round-tripped ``state()`` (after any edit there).
    ``torch_error`` is the exception torch raised at step ``torch_error["step"]``.
    """

    name: str
    family: str
    scheduler: Config
    param_groups: Groups
    steps: int
    metrics: list[float] | None = None
    lr_edits: dict[int, list[float]] = field(default_factory=dict)
    restore_after: list[int] = field(default_factory=list)
    expected_lr: list[list[float]] = field(default_factory=list)
    expected_momentum: list[list[float]] | None = None
    torch_error: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "scheduler": self.scheduler,
            "param_groups": self.param_groups,
            "steps": self.steps,
            "metrics": self.metrics,
            "lr_edits": [[step, lrs] for step, lrs in sorted(self.lr_edits.items())],
            "restore_after": self.restore_after,
            "expected_lr": self.expected_lr,
            "expected_momentum": self.expected_momentum,
            "torch_error": self.torch_error,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Case":
        return cls(
            name=data["name"],
            family=data["family"],
            scheduler=data["scheduler"],
            param_groups=data["param_groups"],
            steps=data["steps"],
            metrics=data["metrics"],
            lr_edits={step: lrs for step, lrs in data["lr_edits"]},
            restore_after=data["restore_after"],
            expected_lr=data["expected_lr"],
            expected_momentum=data["expected_momentum"],
            torch_error=data["torch_error"],
        )

    @property
    def monitor(self) -> str:
        return self.scheduler.get("monitor", "val_loss")


@dataclass
class Rejection:
    """A config the engine must refuse with ``InvalidConfig`` whose loc starts with one of ``locs``.

    ``kind`` is ``"constructor"`` (torch's constructor raises ``torch_type``/``torch_message``)
    or ``"crash_later"`` (torch accepts it and raises at step ``crash_step``). For the
    latter, ``must_refuse`` False allows the engine to accept the config instead and
    fail at that very step, after agreeing with torch on every step before it (``case``).
    """

    name: str
    family: str
    kind: str
    scheduler: Config
    param_groups: Groups
    locs: list[list[str | int]]
    must_refuse: bool = True
    torch_type: str = ""
    torch_message: str = ""
    crash_step: int | None = None
    case: Case | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "kind": self.kind,
            "scheduler": self.scheduler,
            "param_groups": self.param_groups,
            "locs": self.locs,
            "must_refuse": self.must_refuse,
            "torch_type": self.torch_type,
            "torch_message": self.torch_message,
            "crash_step": self.crash_step,
            "case": None if self.case is None else self.case.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Rejection":
        return cls(
            name=data["name"],
            family=data["family"],
            kind=data["kind"],
            scheduler=data["scheduler"],
            param_groups=data["param_groups"],
            locs=data["locs"],
            must_refuse=data["must_refuse"],
            torch_type=data["torch_type"],
            torch_message=data["torch_message"],
            crash_step=data["crash_step"],
            case=None if data["case"] is None else Case.from_json(data["case"]),
        )


def write_json_gz(path: Path, payload: Any) -> None:
    """Deterministic bytes: sorted keys, no timestamp in the gzip header."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    path.write_bytes(gzip.compress(text.encode(), compresslevel=9, mtime=0))


def read_json_gz(path: Path) -> Any:
    return json.loads(gzip.decompress(path.read_bytes()))


def load_golden_cases(family: str) -> list[Case]:
    return [Case.from_json(item) for item in read_json_gz(GOLDEN_DIR / f"{family}.json.gz")]


def load_rejections() -> list[Rejection]:
    return [Rejection.from_json(item) for item in read_json_gz(GOLDEN_DIR / REJECTIONS_FILE)]


# -- drawing values ------------------------------------------------------------------------------


def log_uniform(chooser: Chooser, low: float, high: float) -> float:
    return 10.0 ** chooser.real(math.log10(low), math.log10(high))


def draw_lr(chooser: Chooser) -> float:
    if chooser.flag(0.25):
        # An int lr (JSON 1) stays an int in torch wherever its arithmetic keeps it one.
        return chooser.choice((0.1, 0.01, 0.05, 1.0, 0.003, 0.001, 0.3, 1, 0.0))
    return log_uniform(chooser, 1e-4, 1.0)


def draw_groups(chooser: Chooser, kind: str, count: int) -> Groups:
    """JSON param groups: ``kind`` SGD (momentum), Adam (betas) or Plain (neither)."""
    groups: Groups = []
    for _ in range(count):
        group: dict[str, Any] = {"lr": draw_lr(chooser)}
        if kind == "SGD":
            group["momentum"] = chooser.choice((0.0, 0.9, chooser.real(0.0, 0.99)))
        elif kind == "Adam":
            group["betas"] = [
                chooser.choice((0.9, chooser.real(0.5, 0.99))),
                chooser.choice((0.999, chooser.real(0.9, 0.9999))),
            ]
        groups.append(group)
    return groups


def fmt(value: float) -> str:
    """A float as expression text that parses back to the same double."""
    return repr(float(value))


@dataclass
class Context:
    """What a config drawer needs to know about the case around it."""

    groups: int
    horizon: int  # number of steps the case will run
    kind: str  # SGD, Adam or Plain
    depth: int = 0


def maybe(chooser: Chooser, params: dict[str, Any], key: str, value: Callable[[], Any]) -> None:
    """Spell a parameter out most of the time, leave it to torch's default otherwise."""
    if chooser.flag(0.75):
        params[key] = value()


def per_group_or_one(chooser: Chooser, ctx: Context, value: Callable[[], Any]) -> Any:
    if ctx.groups > 1 and chooser.flag(0.3):
        return [value() for _ in range(ctx.groups)]
    return value()


def period(chooser: Chooser, ctx: Context, smallest: int = 1) -> int:
    """A period that fits the case: a few cycles over the horizon, sometimes longer than it."""
    upper = max(smallest, ctx.horizon // chooser.choice((1, 2, 3, 5, 10)))
    return chooser.integer(smallest, upper)


# -- expression templates: factor of the base lr (LambdaLR), per-step factor (MultiplicativeLR),
# and CyclicLR scale functions. Each returns the source text for drawn constants.


def lambda_expression(chooser: Chooser, ctx: Context) -> str:
    horizon = max(ctx.horizon, 2)
    g = fmt(chooser.real(0.9, 1.0))
    w = chooser.integer(1, max(1, horizon // 3))
    s = chooser.integer(1, max(1, horizon // 4))
    t = chooser.integer(1, horizon)
    d = fmt(chooser.real(0.0, 0.1))
    templates = (
        f"{g} ** epoch",
        f"min(1.0, (epoch + 1) / {w})",
        f"1.0 / (1.0 + {d} * epoch)",
        f"{g} ** (epoch // {s})",
        f"epoch // {s} + 1",
        f"max({fmt(chooser.real(0.0, 0.5))}, 1.0 - epoch / {t})",
        f"(1 + cos(pi * epoch / {t})) / 2",
        f"exp(-{d} * epoch)",
        f"(epoch + 1) / {w} if epoch < {w} else {g} ** (epoch - {w})",
        "1",
        f"sqrt({w} / max(epoch, {w}))",
        f"math.cos(epoch / {t}) ** 2",
        f"{fmt(chooser.real(0.1, 2.0))}",
    )
    return chooser.choice(templates)


def multiplicative_expression(chooser: Chooser, ctx: Context) -> str:
    horizon = max(ctx.horizon, 2)
    g = fmt(chooser.real(0.8, 1.0))
    s = chooser.integer(1, max(1, horizon // 4))
    w = chooser.integer(1, 50)
    d = fmt(chooser.real(0.0, 0.2))
    templates = (
        g,
        f"{g} if epoch % {s} == 0 else 1.0",
        f"1.0 - {d} / (epoch + {w})",
        f"max({fmt(chooser.real(0.5, 0.99))}, {g} ** (epoch / {horizon}))",
        f"1.0 + {d} * cos(epoch)",
        f"{g} ** (epoch % 3)",
        "1",
        f"min(1.0, {fmt(chooser.real(0.9, 1.0))} + epoch / {horizon * 10})",
    )
    return chooser.choice(templates)


def scale_expression(chooser: Chooser, ctx: Context) -> str:
    t = chooser.integer(1, max(1, ctx.horizon))
    templates = (
        "1 / (2.0 ** (x - 1))",
        f"{fmt(chooser.real(0.99, 1.0))} ** x",
        "1.0",
        f"max(0.1, 1 - x / {t})",
        f"0.5 * (1 + cos(pi * x / {t}))",
    )
    return chooser.choice(templates)


# -- config drawers, one per type ----------------------------------------------------------------


def draw_lambda(chooser: Chooser, ctx: Context) -> Config:
    expressions: str | list[str]
    if ctx.groups > 1 and chooser.flag(0.3):
        expressions = [lambda_expression(chooser, ctx) for _ in range(ctx.groups)]
    else:
        expressions = lambda_expression(chooser, ctx)
    return {"type": "LambdaLR", "params": {"lr_lambda": expressions}}


def draw_multiplicative(chooser: Chooser, ctx: Context) -> Config:
    expressions: str | list[str]
    if ctx.groups > 1 and chooser.flag(0.3):
        expressions = [multiplicative_expression(chooser, ctx) for _ in range(ctx.groups)]
    else:
        expressions = multiplicative_expression(chooser, ctx)
    return {"type": "MultiplicativeLR", "params": {"lr_lambda": expressions}}


def draw_gamma(chooser: Chooser) -> float:
    return chooser.choice((0.5, 0.1, 0.9, chooser.real(0.05, 1.0), chooser.real(0.5, 1.0), 1.0))


def draw_step(chooser: Chooser, ctx: Context) -> Config:
    step_size = period(chooser, ctx)
    if chooser.flag(0.05):
        step_size = -step_size  # torch accepts it: e % negative == 0 still decays
    params: dict[str, Any] = {"step_size": step_size}
    maybe(chooser, params, "gamma", lambda: draw_gamma(chooser))
    return {"type": "StepLR", "params": params}


def draw_multistep(chooser: Chooser, ctx: Context) -> Config:
    count = chooser.integer(0, 6)
    milestones = sorted(chooser.integer(1, ctx.horizon + 5) for _ in range(count))
    if chooser.flag(0.1):
        milestones.insert(0, 0)  # a 0 milestone decays at construction already
    if milestones and chooser.flag(0.15):
        milestones.append(chooser.choice(milestones))  # duplicates count twice
    if chooser.flag(0.15):
        milestones = milestones[::-1]  # torch does not mind the order
    params: dict[str, Any] = {"milestones": milestones}
    maybe(chooser, params, "gamma", lambda: draw_gamma(chooser))
    return {"type": "MultiStepLR", "params": params}


def draw_total_iters(chooser: Chooser, ctx: Context) -> int:
    if chooser.flag(0.08):
        return chooser.choice((0, -1, -3))
    return period(chooser, ctx, smallest=1)


def draw_constant(chooser: Chooser, ctx: Context) -> Config:
    params: dict[str, Any] = {}
    maybe(chooser, params, "factor", lambda: chooser.choice((0.5, 1.0, chooser.real(0.01, 1.0))))
    maybe(chooser, params, "total_iters", lambda: draw_total_iters(chooser, ctx))
    return {"type": "ConstantLR", "params": params}


def draw_linear(chooser: Chooser, ctx: Context) -> Config:
    params: dict[str, Any] = {}
    maybe(
        chooser,
        params,
        "start_factor",
        lambda: chooser.choice((1.0, 0.1, chooser.real(0.001, 1.0))),
    )
    maybe(
        chooser,
        params,
        "end_factor",
        lambda: chooser.choice((0.0, 1.0, 0.5, chooser.real(0.0, 1.0))),
    )
    maybe(chooser, params, "total_iters", lambda: draw_total_iters(chooser, ctx))
    return {"type": "LinearLR", "params": params}


def draw_exponential(chooser: Chooser, ctx: Context) -> Config:
    gamma = chooser.choice(
        (
            0.9,
            0.99,
            1.0,
            1.001,
            chooser.real(0.95, 1.0),
            1.0 - chooser.real(0.0, 10.0 / ctx.horizon),
        )
    )
    return {"type": "ExponentialLR", "params": {"gamma": gamma}}


def draw_polynomial(chooser: Chooser, ctx: Context) -> Config:
    params: dict[str, Any] = {}
    maybe(chooser, params, "total_iters", lambda: draw_total_iters(chooser, ctx))
    maybe(
        chooser,
        params,
        "power",
        lambda: chooser.choice((2, 0.5, 0.0, 1.0, chooser.real(0.1, 3.0))),
    )
    if params.get("total_iters", 5) <= 0 and chooser.flag(0.3):
        params["power"] = -chooser.real(0.1, 2.0)  # never divides: valid in torch
    return {"type": "PolynomialLR", "params": params}


def draw_eta_min(chooser: Chooser) -> float:
    return chooser.choice((0.0, 0, 1e-6, log_uniform(chooser, 1e-7, 1e-2), chooser.real(0.0, 0.5)))


def draw_cosine(chooser: Chooser, ctx: Context) -> Config:
    t_max = period(chooser, ctx)
    if chooser.flag(0.03):
        t_max = -t_max  # accepted by torch, never divides by zero
    params: dict[str, Any] = {"T_max": t_max}
    maybe(chooser, params, "eta_min", lambda: draw_eta_min(chooser))
    return {"type": "CosineAnnealingLR", "params": params}


def draw_warm_restarts(chooser: Chooser, ctx: Context) -> Config:
    params: dict[str, Any] = {"T_0": period(chooser, ctx)}
    maybe(chooser, params, "T_mult", lambda: chooser.choice((1, 2, 3)))
    maybe(chooser, params, "eta_min", lambda: draw_eta_min(chooser))
    return {"type": "CosineAnnealingWarmRestarts", "params": params}


def draw_momentum_pair(chooser: Chooser, ctx: Context, params: dict[str, Any]) -> None:
    maybe(
        chooser,
        params,
        "base_momentum",
        lambda: per_group_or_one(
            chooser, ctx, lambda: chooser.choice((0.8, 0.85, chooser.real(0.5, 0.9)))
        ),
    )
    maybe(
        chooser,
        params,
        "max_momentum",
        lambda: per_group_or_one(
            chooser, ctx, lambda: chooser.choice((0.9, 0.95, chooser.real(0.85, 0.99)))
        ),
    )


def draw_cycle_momentum(chooser: Chooser, ctx: Context, params: dict[str, Any]) -> None:
    if ctx.kind == "Plain":
        params["cycle_momentum"] = False
    else:
        maybe(chooser, params, "cycle_momentum", lambda: chooser.flag(0.7))


def draw_cyclic(chooser: Chooser, ctx: Context) -> Config:
    base = per_group_or_one(chooser, ctx, lambda: log_uniform(chooser, 1e-5, 1e-2))
    peak = per_group_or_one(chooser, ctx, lambda: log_uniform(chooser, 1e-3, 1.0))
    params: dict[str, Any] = {"base_lr": base, "max_lr": peak}
    maybe(chooser, params, "step_size_up", lambda: period(chooser, ctx))
    if chooser.flag(0.6):
        params["step_size_down"] = chooser.choice((None, period(chooser, ctx), 0))
    if chooser.flag(0.2):
        params["scale_fn"] = scale_expression(chooser, ctx)
        maybe(chooser, params, "scale_mode", lambda: chooser.choice(("cycle", "iterations")))
        if chooser.flag(0.3):
            params["mode"] = chooser.choice(("triangular2", "not-a-mode"))  # ignored by torch
    else:
        maybe(
            chooser,
            params,
            "mode",
            lambda: chooser.choice(("triangular", "triangular2", "exp_range")),
        )
        if chooser.flag(0.2):
            params["scale_mode"] = chooser.choice(("cycle", "iterations"))  # ignored by torch
    maybe(chooser, params, "gamma", lambda: chooser.choice((1.0, 0.99, chooser.real(0.99, 1.0))))
    draw_cycle_momentum(chooser, ctx, params)
    draw_momentum_pair(chooser, ctx, params)
    return {"type": "CyclicLR", "params": params}


def draw_one_cycle(chooser: Chooser, ctx: Context) -> Config:
    """Long enough for the case: total_steps ≥ horizon, exactly horizon half the time.

    Now and then a little shorter at the top level: stepping past the end raises in torch
    (StepPastEnd in the engine).
    """
    total = ctx.horizon if chooser.flag(0.5) else ctx.horizon + chooser.integer(0, 50)
    if ctx.depth == 0 and ctx.horizon > 4 and chooser.flag(0.05):
        total = ctx.horizon - chooser.integer(1, 3)
    total = max(total, 1)
    params: dict[str, Any] = {
        "max_lr": per_group_or_one(chooser, ctx, lambda: log_uniform(chooser, 1e-3, 1.0))
    }
    divisors = [d for d in range(2, min(total, 50) + 1) if total % d == 0]
    if divisors and chooser.flag(0.3):
        per_epoch = chooser.choice(divisors)
        params["epochs"] = total // per_epoch
        params["steps_per_epoch"] = per_epoch
    else:
        params["total_steps"] = total
    maybe(
        chooser,
        params,
        "pct_start",
        lambda: chooser.choice((0.3, 0.25, 0.5, 0.0, chooser.real(0.0, 0.95))),
    )
    maybe(chooser, params, "anneal_strategy", lambda: chooser.choice(("cos", "linear")))
    maybe(chooser, params, "three_phase", lambda: chooser.flag(0.5))
    maybe(
        chooser, params, "div_factor", lambda: chooser.choice((25.0, 10, chooser.real(1.5, 100.0)))
    )
    maybe(
        chooser,
        params,
        "final_div_factor",
        lambda: chooser.choice((1e4, 100, log_uniform(chooser, 1.0, 1e5))),
    )
    draw_cycle_momentum(chooser, ctx, params)
    draw_momentum_pair(chooser, ctx, params)
    return {"type": "OneCycleLR", "params": params}


def draw_plateau(chooser: Chooser, ctx: Context) -> Config:
    """Mostly ordinary settings; now and then torch's odd but valid corners.

    (factor ≤ 0, patience -1, threshold 1.0 — which makes every epoch a bad one.)
    """
    params: dict[str, Any] = {}
    odd = chooser.flag(0.15)
    maybe(chooser, params, "mode", lambda: chooser.choice(("min", "max")))
    maybe(
        chooser,
        params,
        "factor",
        lambda: (
            chooser.choice((-0.5, 0.0))
            if odd
            else chooser.choice((0.5, 0.1, chooser.real(0.05, 0.95)))
        ),
    )
    maybe(
        chooser,
        params,
        "patience",
        lambda: -1 if odd else chooser.choice((0, 1, 3, chooser.integer(0, 15))),
    )
    maybe(
        chooser,
        params,
        "threshold",
        lambda: 1.0 if odd else chooser.choice((1e-4, 0.0, 0.01, chooser.real(0.0, 0.1))),
    )
    maybe(chooser, params, "threshold_mode", lambda: chooser.choice(("rel", "abs")))
    maybe(chooser, params, "cooldown", lambda: chooser.choice((0, 1, chooser.integer(0, 8))))
    maybe(
        chooser,
        params,
        "min_lr",
        lambda: per_group_or_one(
            chooser, ctx, lambda: chooser.choice((0, 0.0, 1e-5, log_uniform(chooser, 1e-6, 1e-2)))
        ),
    )
    maybe(
        chooser,
        params,
        "eps",
        lambda: chooser.choice((1e-8, 0.0, 1e-3, log_uniform(chooser, 1e-9, 1e-2))),
    )
    config: Config = {"type": "ReduceLROnPlateau", "params": params}
    if chooser.flag(0.3):
        config["monitor"] = chooser.choice(("loss", "val_acc", "val_loss"))
    return config


LEAF_DRAWERS: dict[str, Callable[[Chooser, Context], Config]] = {
    "LambdaLR": draw_lambda,
    "MultiplicativeLR": draw_multiplicative,
    "StepLR": draw_step,
    "MultiStepLR": draw_multistep,
    "ConstantLR": draw_constant,
    "LinearLR": draw_linear,
    "ExponentialLR": draw_exponential,
    "PolynomialLR": draw_polynomial,
    "CosineAnnealingLR": draw_cosine,
    "CosineAnnealingWarmRestarts": draw_warm_restarts,
    "CyclicLR": draw_cyclic,
    "OneCycleLR": draw_one_cycle,
}


def draw_leaf(chooser: Chooser, ctx: Context) -> Config:
    return LEAF_DRAWERS[chooser.choice(LEAF_TYPES)](chooser, ctx)


def draw_milestones(chooser: Chooser, ctx: Context, count: int) -> list[int]:
    milestones = sorted(chooser.integer(1, max(1, ctx.horizon)) for _ in range(count))
    if count and chooser.flag(0.1):
        milestones[0] = chooser.choice((0, -2))  # torch checks neither sign nor order
    if count > 1 and chooser.flag(0.1):
        milestones[1] = milestones[0]  # the later child wins, the skipped one never runs
    if count > 1 and chooser.flag(0.05):
        milestones = milestones[::-1]
    return milestones


def without_latent_crash(child: Config) -> Config:
    """A later SequentialLR child whose closed form at epoch 0 cannot divide by zero.

    LinearLR and PolynomialLR with ``total_iters=0`` (0 / 0) and PolynomialLR with a negative
    power (0.0 ** negative) crash torch at their milestone; the engine refuses them at
    creation (API.md), even where the milestone is never reached, so drawn cases leave
    them out (test_rejections.py pins them).
    """
    params = child["params"]
    if child["type"] == "LinearLR" and params.get("total_iters") == 0:
        params["total_iters"] = 1
    if child["type"] == "PolynomialLR" and params.get("total_iters") == 0:
        params["total_iters"] = 1
    if child["type"] == "PolynomialLR" and params.get("power", 1.0) < 0:
        params["power"] = -params["power"]
    return child


def draw_sequential(chooser: Chooser, ctx: Context) -> Config:
    """Leaf children; at the top level sometimes a composite first child (§17's quirks)."""
    count = 1 if chooser.flag(0.15) else chooser.integer(2, 4)
    children = [draw_leaf(chooser, ctx)]
    children += [without_latent_crash(draw_leaf(chooser, ctx)) for _ in range(count - 1)]
    if ctx.depth < MAX_DEPTH and chooser.flag(0.2):
        inner = Context(ctx.groups, ctx.horizon, ctx.kind, depth=ctx.depth + 1)
        if chooser.flag(0.5):
            children[0] = draw_chained(chooser, inner)
        else:
            children[0] = draw_sequential(chooser, inner)
    if ctx.depth < MAX_DEPTH and chooser.flag(0.08):
        # SequentialLR around a single SequentialLR: not equivalent to the inner one in 2.13.0.
        inner = Context(ctx.groups, ctx.horizon, ctx.kind, depth=ctx.depth + 1)
        return {
            "type": "SequentialLR",
            "params": {"schedulers": [draw_sequential(chooser, inner)], "milestones": []},
        }
    params = {"schedulers": children, "milestones": draw_milestones(chooser, ctx, count - 1)}
    return {"type": "SequentialLR", "params": params}


def draw_chained(chooser: Chooser, ctx: Context) -> Config:
    count = 1 if chooser.flag(0.15) else chooser.integer(2, 4)
    children = [draw_leaf(chooser, ctx) for _ in range(count)]
    if ctx.depth < MAX_DEPTH and chooser.flag(0.2):
        inner = Context(ctx.groups, ctx.horizon, ctx.kind, depth=ctx.depth + 1)
        nested = draw_sequential if chooser.flag(0.7) else draw_chained
        children[chooser.integer(0, count - 1)] = nested(chooser, inner)
    return {"type": "ChainedScheduler", "params": {"schedulers": children}}


DRAWERS: dict[str, Callable[[Chooser, Context], Config]] = {
    **LEAF_DRAWERS,
    "ReduceLROnPlateau": draw_plateau,
    "SequentialLR": draw_sequential,
    "ChainedScheduler": draw_chained,
}


def cycles_momentum(config: Config) -> bool:
    params = config.get("params", {})
    if config["type"] in ("SequentialLR", "ChainedScheduler"):
        return any(cycles_momentum(child) for child in params["schedulers"])
    return config["type"] in ("CyclicLR", "OneCycleLR") and params.get("cycle_momentum", True)


def draw_metrics(rng: random.Random, steps: int, mode: str) -> list[float]:
    """Losses with improvements, exact plateaus, noise, regressions, and rare NaN / ±inf."""
    sign = 1.0 if mode == "min" else -1.0
    level = rng.choice((1.0, 10.0, 0.01, -5.0)) * rng.uniform(0.5, 2.0)
    values: list[float] = []
    while len(values) < steps:
        length = rng.randint(1, 30)
        shape = rng.choice(("improve", "flat", "noise", "worse", "tiny", "int"))
        for _ in range(length):
            if shape == "improve":
                level -= sign * abs(level) * rng.uniform(0.0, 0.05)
            elif shape == "worse":
                level += sign * abs(level) * rng.uniform(0.0, 0.05)
            elif shape == "noise":
                level += abs(level) * rng.gauss(0.0, 0.02)
            elif shape == "tiny":
                level -= sign * abs(level) * 1e-6  # below a rel threshold of 1e-4
            elif shape == "int":
                level = round(level) - int(sign) * rng.randint(
                    -1, 1
                )  # JSON ints: torch float()s them
            special = rng.random()
            if special < 0.02:
                values.append(math.nan)
            elif special < 0.027:
                values.append(math.inf)
            elif special < 0.031:
                values.append(-math.inf)
            else:
                values.append(level)
    return values[:steps]


def draw_edits(chooser: Chooser, steps: int, groups: int) -> dict[int, list[float]]:
    edits: dict[int, list[float]] = {}
    if steps > 0 and chooser.flag(0.2):
        for _ in range(chooser.integer(1, 3)):
            edits[chooser.integer(0, steps - 1)] = [draw_lr(chooser) for _ in range(groups)]
    return edits


def draw_restores(chooser: Chooser, steps: int) -> list[int]:
    if steps > 0 and chooser.flag(0.3):
        return sorted({chooser.integer(0, steps - 1) for _ in range(chooser.integer(1, 3))})
    return []


def draw_case(chooser: Chooser, family: str, name: str, steps: int, max_groups: int = 4) -> Case:
    """A case of ``family`` running ``steps`` steps (the drawers scale their periods to it)."""
    kind = chooser.choice(("SGD", "Adam", "SGD", "Adam", "Plain"))
    group_count = chooser.integer(1, max_groups)
    ctx = Context(groups=group_count, horizon=max(steps, 1), kind=kind)
    config = DRAWERS[family](chooser, ctx)
    groups = draw_groups(chooser, kind, group_count)
    metrics = None
    if family == "ReduceLROnPlateau":
        mode = config["params"].get("mode", "min")
        metrics = draw_metrics(chooser.bulk_rng(), steps, mode)
    return Case(
        name=name,
        family=family,
        scheduler=config,
        param_groups=groups,
        steps=steps,
        metrics=metrics,
        lr_edits=draw_edits(chooser, steps, group_count),
        restore_after=draw_restores(chooser, steps),
    )


# -- hand-picked cases: the quirks TORCH_SEMANTICS.md names, each pinned once ----------------------

SGD2: Groups = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.003, "momentum": 0.0}]
ADAM1: Groups = [{"lr": 0.05, "betas": [0.9, 0.999]}]
PLAIN2: Groups = [{"lr": 0.1}, {"lr": 0.01}]


def cfg(type_name: str, **params: Any) -> Config:
    return {"type": type_name, "params": params}


def seq(milestones: list[int], *children: Config) -> Config:
    return cfg("SequentialLR", schedulers=list(children), milestones=milestones)


def chain(*children: Config) -> Config:
    return cfg("ChainedScheduler", schedulers=list(children))


def quirk_cases() -> list[Case]:
    def case(slug: str, config: Config, steps: int, groups: Groups = SGD2) -> Case:
        family = config["type"]
        return Case(f"{family}/quirk-{slug}", family, config, copy.deepcopy(groups), steps)

    inner = seq(
        [5], cfg("LinearLR", start_factor=0.1, total_iters=4), cfg("CosineAnnealingLR", T_max=10)
    )
    return [
        case("int-factor", cfg("LambdaLR", lr_lambda="epoch // 30"), 100),
        case("division-by-zero-at-step-3", cfg("LambdaLR", lr_lambda="1.0 / (epoch - 3)"), 10),
        case("factor", cfg("MultiplicativeLR", lr_lambda="0.95"), 300),
        case("torch-doc", cfg("StepLR", step_size=30), 100),
        case("zero-and-doubled", cfg("MultiStepLR", milestones=[0, 5, 5, 9], gamma=0.3), 12),
        case("never-restores", cfg("ConstantLR", factor=0.3, total_iters=0), 10),
        case("restore", cfg("ConstantLR", factor=0.7, total_iters=4), 10),
        case("int-lr", cfg("ConstantLR", factor=1, total_iters=2), 4, [{"lr": 1}]),
        case("zero-total-iters", cfg("LinearLR", total_iters=0), 10),
        case("long", cfg("ExponentialLR", gamma=0.999), LONG_STEPS),
        case("zero-total-iters", cfg("PolynomialLR", total_iters=0, power=-1.0), 10),
        case("end", cfg("PolynomialLR", total_iters=7, power=2.0), 12),
        case("drift", cfg("CosineAnnealingLR", T_max=100, eta_min=0.001), LONG_STEPS),
        case("eta-above-base", cfg("CosineAnnealingLR", T_max=7, eta_min=0.5), 30),
        case("eta-above-base", cfg("CosineAnnealingWarmRestarts", T_0=3, eta_min=0.02), 30),
        case("mult-3", cfg("CosineAnnealingWarmRestarts", T_0=1, T_mult=3), 400),
        case(
            "defaults-adam", cfg("CyclicLR", base_lr=0.001, max_lr=0.1, step_size_up=7), 60, ADAM1
        ),
        case(
            "exp-range",
            cfg(
                "CyclicLR",
                base_lr=[0.001, 0.002],
                max_lr=0.1,
                step_size_up=5,
                step_size_down=3,
                mode="exp_range",
                gamma=0.97,
            ),
            80,
        ),
        case(
            "linear-below-min",
            cfg("OneCycleLR", max_lr=0.1, total_steps=10, anneal_strategy="linear"),
            10,
        ),
        case("past-the-end", cfg("OneCycleLR", max_lr=0.1, total_steps=10), 11, ADAM1),
        case(
            "three-phase",
            cfg("OneCycleLR", max_lr=[0.1, 0.2], epochs=4, steps_per_epoch=25, three_phase=True),
            100,
        ),
        case(
            "threshold-one-never-improves", cfg("ReduceLROnPlateau", threshold=1.0, patience=2), 12
        ),
        case(
            "torch-doc",
            seq([2], cfg("ConstantLR", factor=0.1, total_iters=2), cfg("ExponentialLR", gamma=0.9)),
            20,
        ),
        case(
            "multiplicative-at-milestone",
            seq(
                [4],
                cfg("ExponentialLR", gamma=0.8),
                cfg("MultiplicativeLR", lr_lambda="0.5 + epoch"),
            ),
            10,
        ),
        case(
            "one-cycle-overwrites-initial-lr",
            seq([5], cfg("StepLR", step_size=2), cfg("OneCycleLR", max_lr=0.5, total_steps=20)),
            20,
        ),
        case(
            "chained-first-child",
            seq(
                [6],
                chain(
                    cfg("ExponentialLR", gamma=0.9), cfg("ConstantLR", factor=0.5, total_iters=3)
                ),
                cfg("StepLR", step_size=2),
            ),
            15,
        ),
        case("single-sequential-child", seq([], inner), 20),
        case(
            "duplicate-milestones",
            seq([3, 3], cfg("ConstantLR"), cfg("StepLR", step_size=1), cfg("LinearLR")),
            10,
        ),
        case(
            "construction-order",
            chain(cfg("ConstantLR", factor=0.1), cfg("LinearLR", start_factor=0.5)),
            10,
        ),
        case("sequential-child", chain(cfg("ExponentialLR", gamma=0.95), inner), 20),
        case(
            "lambda-overwrites",
            chain(cfg("ExponentialLR", gamma=0.5), cfg("LambdaLR", lr_lambda="0.9 ** epoch")),
            10,
        ),
    ]


QUIRK_METRICS: dict[str, list[float]] = {
    "ReduceLROnPlateau/quirk-threshold-one-never-improves": [
        1.0,
        0.5,
        0.2,
        0.1,
        0.05,
        0.01,
        0.005,
        0.001,
        0.0,
        -1.0,
        -2.0,
        -3.0,
    ],
}


# -- rejected configs ------------------------------------------------------------------------------


def _loc(*parts: str | int) -> list[str | int]:
    return ["scheduler", "params", *parts]


def constructor_rejections() -> list[Rejection]:
    """Configs torch's constructor refuses, each with the field the engine's loc must start with."""

    def refuse(
        slug: str, config: Config, *locs: list[str | int], groups: Groups = SGD2
    ) -> Rejection:
        family = config["type"]
        return Rejection(
            f"{family}/{slug}", family, "constructor", config, copy.deepcopy(groups), list(locs)
        )

    cyclic = {"base_lr": 0.001, "max_lr": 0.1}
    one_cycle = {"max_lr": 0.1, "total_steps": 100}
    no_length = (_loc("total_steps"), _loc("epochs"), _loc("steps_per_epoch"))
    step = cfg("StepLR", step_size=2)
    plateau = cfg("ReduceLROnPlateau")
    return [
        refuse(
            "lr-lambda-list-length",
            cfg("LambdaLR", lr_lambda=["1.0", "0.9 ** epoch", "1.0"]),
            _loc("lr_lambda"),
        ),
        refuse(
            "lr-lambda-list-length", cfg("MultiplicativeLR", lr_lambda=["0.9"]), _loc("lr_lambda")
        ),
        refuse("factor-above-one", cfg("ConstantLR", factor=1.5), _loc("factor")),
        refuse("factor-negative", cfg("ConstantLR", factor=-0.1), _loc("factor")),
        refuse("start-factor-zero", cfg("LinearLR", start_factor=0.0), _loc("start_factor")),
        refuse("start-factor-above-one", cfg("LinearLR", start_factor=1.5), _loc("start_factor")),
        refuse("start-factor-negative", cfg("LinearLR", start_factor=-0.5), _loc("start_factor")),
        refuse("end-factor-above-one", cfg("LinearLR", end_factor=1.5), _loc("end_factor")),
        refuse("end-factor-negative", cfg("LinearLR", end_factor=-0.1), _loc("end_factor")),
        refuse("t0-zero", cfg("CosineAnnealingWarmRestarts", T_0=0), _loc("T_0")),
        refuse("t0-negative", cfg("CosineAnnealingWarmRestarts", T_0=-3), _loc("T_0")),
        refuse("t0-float", cfg("CosineAnnealingWarmRestarts", T_0=10.5), _loc("T_0")),
        refuse("t-mult-zero", cfg("CosineAnnealingWarmRestarts", T_0=10, T_mult=0), _loc("T_mult")),
        refuse(
            "t-mult-float", cfg("CosineAnnealingWarmRestarts", T_0=10, T_mult=1.5), _loc("T_mult")
        ),
        refuse(
            "eta-min-string",
            cfg("CosineAnnealingWarmRestarts", T_0=10, eta_min="0.1"),
            _loc("eta_min"),
        ),
        refuse(
            "base-lr-list-length",
            cfg("CyclicLR", **{**cyclic, "base_lr": [0.001]}),
            _loc("base_lr"),
        ),
        refuse(
            "max-lr-list-length",
            cfg("CyclicLR", **{**cyclic, "max_lr": [0.1, 0.2, 0.3]}),
            _loc("max_lr"),
        ),
        refuse(
            "zero-cycle",
            cfg("CyclicLR", **cyclic, step_size_up=0, step_size_down=0),
            _loc("step_size_up"),
            _loc("step_size_down"),
        ),
        refuse(
            "zero-step-size-up",
            cfg("CyclicLR", **cyclic, step_size_up=0, step_size_down=5),
            _loc("step_size_up"),
        ),
        refuse("mode-invalid", cfg("CyclicLR", **cyclic, mode="sawtooth"), _loc("mode")),
        refuse(
            "no-momentum-to-cycle",
            cfg("CyclicLR", **cyclic),
            ["param_groups", 0, "momentum"],
            groups=PLAIN2,
        ),
        refuse(
            "base-momentum-list-length",
            cfg("CyclicLR", **cyclic, base_momentum=[0.8]),
            _loc("base_momentum"),
        ),
        refuse(
            "max-momentum-list-length",
            cfg("CyclicLR", **cyclic, max_momentum=[0.9, 0.9, 0.9]),
            _loc("max_momentum"),
        ),
        refuse(
            "total-steps-zero", cfg("OneCycleLR", max_lr=0.1, total_steps=0), _loc("total_steps")
        ),
        refuse(
            "total-steps-negative",
            cfg("OneCycleLR", max_lr=0.1, total_steps=-5),
            _loc("total_steps"),
        ),
        refuse(
            "total-steps-float",
            cfg("OneCycleLR", max_lr=0.1, total_steps=100.0),
            _loc("total_steps"),
        ),
        refuse("no-length", cfg("OneCycleLR", max_lr=0.1), *no_length),
        refuse(
            "epochs-without-steps-per-epoch", cfg("OneCycleLR", max_lr=0.1, epochs=5), *no_length
        ),
        refuse(
            "epochs-zero",
            cfg("OneCycleLR", max_lr=0.1, epochs=0, steps_per_epoch=10),
            _loc("epochs"),
        ),
        refuse(
            "steps-per-epoch-negative",
            cfg("OneCycleLR", max_lr=0.1, epochs=3, steps_per_epoch=-10),
            _loc("steps_per_epoch"),
        ),
        refuse(
            "pct-start-negative", cfg("OneCycleLR", **one_cycle, pct_start=-0.1), _loc("pct_start")
        ),
        refuse(
            "pct-start-above-one", cfg("OneCycleLR", **one_cycle, pct_start=1.1), _loc("pct_start")
        ),
        refuse(
            "pct-start-int-zero", cfg("OneCycleLR", **one_cycle, pct_start=0), _loc("pct_start")
        ),
        refuse("pct-start-int-one", cfg("OneCycleLR", **one_cycle, pct_start=1), _loc("pct_start")),
        refuse(
            "anneal-strategy",
            cfg("OneCycleLR", **one_cycle, anneal_strategy="exp"),
            _loc("anneal_strategy"),
        ),
        refuse(
            "max-lr-list-length",
            cfg("OneCycleLR", **{**one_cycle, "max_lr": [0.1]}),
            _loc("max_lr"),
        ),
        refuse(
            "no-momentum-to-cycle",
            cfg("OneCycleLR", **one_cycle),
            ["param_groups", 0, "momentum"],
            groups=PLAIN2,
        ),
        refuse(
            "base-momentum-list-length",
            cfg("OneCycleLR", **one_cycle, base_momentum=[0.8, 0.8, 0.8]),
            _loc("base_momentum"),
        ),
        refuse(
            "max-momentum-list-length",
            cfg("OneCycleLR", **one_cycle, max_momentum=[0.9]),
            _loc("max_momentum"),
        ),
        refuse("div-factor-zero", cfg("OneCycleLR", **one_cycle, div_factor=0), _loc("div_factor")),
        refuse(
            "final-div-factor-zero",
            cfg("OneCycleLR", **one_cycle, final_div_factor=0.0),
            _loc("final_div_factor"),
        ),
        refuse(
            "empty-first-phase",
            cfg("OneCycleLR", max_lr=0.1, total_steps=4, pct_start=0.25),
            _loc("pct_start"),
            _loc("total_steps"),
        ),
        refuse(
            "empty-first-phase-three-phase",
            cfg("OneCycleLR", max_lr=0.1, total_steps=10, pct_start=0.1, three_phase=True),
            _loc("pct_start"),
            _loc("total_steps"),
        ),
        refuse("factor-one", cfg("ReduceLROnPlateau", factor=1.0), _loc("factor")),
        refuse("factor-above-one", cfg("ReduceLROnPlateau", factor=2), _loc("factor")),
        refuse(
            "min-lr-list-length", cfg("ReduceLROnPlateau", min_lr=[0.0, 0.0, 0.0]), _loc("min_lr")
        ),
        refuse("mode-unknown", cfg("ReduceLROnPlateau", mode="avg"), _loc("mode")),
        refuse(
            "threshold-mode-unknown",
            cfg("ReduceLROnPlateau", threshold_mode="pct"),
            _loc("threshold_mode"),
        ),
        refuse("no-children", seq([]), _loc("schedulers")),
        refuse("plateau-first-child", seq([5], plateau, step), _loc("schedulers")),
        refuse(
            "milestone-count",
            seq([3, 6], step, cfg("ExponentialLR", gamma=0.9)),
            _loc("milestones"),
        ),
        refuse(
            "invalid-child",
            seq([3], step, cfg("CosineAnnealingWarmRestarts", T_0=0)),
            _loc("schedulers", 1, "params", "T_0"),
        ),
        refuse(
            "invalid-grandchild",
            seq([3], chain(cfg("LinearLR", start_factor=0.0)), step),
            _loc("schedulers", 0, "params", "schedulers", 0, "params", "start_factor"),
        ),
        refuse("no-children", chain(), _loc("schedulers")),
        refuse("plateau-child", chain(step, plateau), _loc("schedulers")),
        refuse(
            "invalid-child",
            chain(cfg("ConstantLR", factor=2.0)),
            _loc("schedulers", 0, "params", "factor"),
        ),
    ]


def crash_later_rejections() -> list[Rejection]:
    """Configs torch accepts but can only crash on later (API.md: refused at creation).

    The three API.md names must be refused; for the others the engine may instead
    accept the config and fail at torch's crash step, after matching every step before.
    """

    def crash(slug: str, config: Config, loc: list[str | int], *, must_refuse: bool) -> Rejection:
        family = config["type"]
        return Rejection(
            f"{family}/{slug}",
            family,
            "crash_later",
            config,
            copy.deepcopy(SGD2),
            [loc],
            must_refuse,
        )

    step = cfg("StepLR", step_size=2)
    exponential = cfg("ExponentialLR", gamma=0.9)
    return [
        crash("step-size-zero", cfg("StepLR", step_size=0), _loc("step_size"), must_refuse=True),
        crash(
            "factor-zero",
            cfg("ConstantLR", factor=0, total_iters=5),
            _loc("factor"),
            must_refuse=True,
        ),
        crash("factor-zero-float", cfg("ConstantLR", factor=0.0), _loc("factor"), must_refuse=True),
        crash("t-max-zero", cfg("CosineAnnealingLR", T_max=0), _loc("T_max"), must_refuse=True),
        crash(
            "negative-power",
            cfg("PolynomialLR", total_iters=6, power=-1.0),
            _loc("power"),
            must_refuse=False,
        ),
        crash(
            "pct-start-one",
            cfg("OneCycleLR", max_lr=0.1, total_steps=20, pct_start=1.0),
            _loc("pct_start"),
            must_refuse=False,
        ),
        crash(
            "sequential-later-child",
            seq([4], step, seq([], exponential)),
            _loc("schedulers"),
            must_refuse=False,
        ),
        crash(
            "chained-later-child",
            seq([4], step, chain(exponential)),
            _loc("schedulers"),
            must_refuse=False,
        ),
        crash(
            "polynomial-zero-iters-later-child",
            seq([3], step, cfg("PolynomialLR", total_iters=0)),
            _loc("schedulers"),
            must_refuse=False,
        ),
        crash(
            "linear-zero-iters-later-child",
            seq([4], cfg("ConstantLR"), cfg("LinearLR", total_iters=0)),
            _loc("schedulers"),
            must_refuse=False,
        ),
    ]


# -- running torch and writing the files -----------------------------------------------------------


def family_seed(base_seed: int, family: str) -> int:
    return base_seed ^ zlib.crc32(family.encode())


def fill_from_torch(case: Case) -> None:
    """Run the case in torch and keep what its param groups held (and any exception)."""
    from tests.schedules.torch_oracle import run_in_torch

    run = run_in_torch(case.scheduler, case.param_groups, case.steps, case.metrics, case.lr_edits)
    case.expected_lr = run.lr
    case.expected_momentum = run.momentum
    case.torch_error = None if run.error is None else vars(run.error)


def is_past_the_end(torch_error: dict[str, Any]) -> bool:
    """OneCycleLR stepped beyond total_steps: the one torch failure drawn cases keep."""
    return torch_error["step"] > 0 and torch_error["message"].startswith("Tried to step")


def random_cases(family: str, base_seed: int = BASE_SEED) -> tuple[list[Case], int]:
    """The family's drawn cases; draws torch refuses or crashes on are drawn again (counted)."""
    rng = random.Random(family_seed(base_seed, family))
    cases: list[Case] = []
    redrawn = 0
    for index in range(CASES_PER_TYPE):
        long = index < LONG_CASES_PER_TYPE
        while True:
            chooser = RandomChooser(rng.getrandbits(64))
            steps = (
                LONG_STEPS
                if long
                else chooser.choice((chooser.integer(1, 60), chooser.integer(20, 300)))
            )
            case = draw_case(
                chooser, family, f"{family}/{index:03d}", steps, max_groups=2 if long else 4
            )
            fill_from_torch(case)
            if case.torch_error is None or is_past_the_end(case.torch_error):
                break
            redrawn += 1
        cases.append(case)
    return cases, redrawn


def pinned_cases(family: str) -> list[Case]:
    cases = [case for case in quirk_cases() if case.family == family]
    for case in cases:
        case.metrics = QUIRK_METRICS.get(case.name)
        fill_from_torch(case)
    return cases


def checked_rejections() -> list[Rejection]:
    """Every rejection with torch's exception recorded; fails if torch does not act as listed."""
    from tests.schedules.torch_oracle import run_in_torch

    rejections = constructor_rejections() + crash_later_rejections()
    for rejection in rejections:
        probe_steps = 30
        run = run_in_torch(rejection.scheduler, rejection.param_groups, probe_steps)
        if run.error is None:
            raise AssertionError(f"torch accepted and ran {rejection.name}")
        if rejection.kind == "constructor" and run.error.step != 0:
            raise AssertionError(f"torch constructed {rejection.name}, crashed at {run.error.step}")
        if rejection.kind == "crash_later":
            if run.error.step == 0:
                raise AssertionError(f"torch refused {rejection.name} at construction")
            rejection.crash_step = run.error.step
            case = Case(
                rejection.name,
                rejection.family,
                rejection.scheduler,
                rejection.param_groups,
                run.error.step,
            )
            fill_from_torch(case)
            rejection.case = case
        rejection.torch_type = run.error.type
        rejection.torch_message = run.error.message
    return rejections


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*", default=list(FAMILIES), help="types to regenerate")
    parser.add_argument("--seed", type=int, default=BASE_SEED, help="base seed of the draws")
    parser.add_argument("--no-rejections", action="store_true")
    args = parser.parse_args(argv)
    GOLDEN_DIR.mkdir(exist_ok=True)
    for family in args.families:
        cases, redrawn = random_cases(family, args.seed)
        cases += pinned_cases(family)
        path = GOLDEN_DIR / f"{family}.json.gz"
        write_json_gz(path, [case.to_json() for case in cases])
        steps = sum(case.steps for case in cases)
        size = path.stat().st_size
        print(f"{path.name}: {len(cases)} cases, {steps} steps, {redrawn} redrawn, {size} bytes")
    if not args.no_rejections:
        rejections = checked_rejections()
        path = GOLDEN_DIR / REJECTIONS_FILE
        write_json_gz(path, [rejection.to_json() for rejection in rejections])
        print(f"{path.name}: {len(rejections)} rejections")


if __name__ == "__main__":
    main()
