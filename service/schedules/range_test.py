"""The LR range test (Smith, 2017): sweep the lr upwards, watch the loss, suggest an lr.

Not a torch class: the worker trains as usual while the lr grows from
``start_lr`` to ``end_lr`` over ``num_steps`` steps, reporting each step's loss.
The loss is smoothed by an exponential moving average with bias correction, the
run says ``stop`` once the smoothed loss has blown up, and :func:`suggest` reads
the smoothed curve.

Choices the contract leaves open, made here:

- Each curve point pairs the loss reported with step k with the lr of step k − 1:
  that is the lr the optimizer used for the batch whose loss it is (the worker
  trains, then steps the scheduler).
- A NaN or infinite loss is divergence: the run stops at that step. The moving
  average then stays non-finite, as the arithmetic says, and the curve keeps the
  points; the suggestion uses only the finite points before the first such one.
- "Exceeds 4 × its minimum" is applied only while the minimum is positive: for a
  loss that can be negative the ratio means nothing (a negative minimum would be
  "exceeded" at once).
- The curve is not part of the state (a state is stored with every step, so a
  curve in it would grow the history quadratically): the service rebuilds it from
  the recorded lrs and losses with :func:`smoothed_curve`, the same arithmetic the
  steps used. ``num_steps`` is at most :data:`MAX_NUM_STEPS`.
"""

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from service.schedules.base import Group, Metrics, Scheduler, read_metric
from service.schedules.codec import decode_floats, encode_floats
from service.schedules.errors import InvalidConfig, ScheduleError, StepPastEnd

# The contract's literals: 1 - 0.98 is not exactly 0.02 in floating point.
SMOOTHING = 0.98
NEW_LOSS_WEIGHT = 0.02
DIVERGENCE_FACTOR = 4
MIN_SUGGESTION_STEPS = 10
MAX_NUM_STEPS = 10_000
# base_lr: the first point where the smoothed loss has fallen by this share of its total fall.
CLEAR_FALL_FRACTION = 0.1
# The slope at a point spans len(curve) // this many points on each side (at least 1).
SLOPE_SPAN_DIVISOR = 50
MODES = ("exp", "linear")
# How a suggestion is read off the curve (``GET /lr-suggestion?method=``), the default first.
METHODS = ("steepest", "minimum", "valley")
DEFAULT_METHOD = "steepest"


class NotEnoughData(ScheduleError):
    """A suggestion was asked for before the curve holds enough usable points."""

    def __init__(self, usable_points: int, message: str) -> None:
        self.usable_points = usable_points
        self.required_points = MIN_SUGGESTION_STEPS
        super().__init__(message)


class LRRangeTest(Scheduler):
    """lr(k) = start_lr · (end_lr / start_lr) ** (k / num_steps)   (mode "exp"), or
    lr(k) = start_lr + (end_lr − start_lr) · k / num_steps        (mode "linear"),
    for k = 0 … num_steps, the same for every group.

    start 1e-6, end 1.0, 6 steps, exp: 1e-6, 1e-5, …, 1.0. Each step k ≥ 1 reads the
    loss: avg = 0.98·avg + 0.02·loss, smoothed = avg / (1 − 0.98^k); ``stop`` from the
    first step whose smoothed loss exceeds 4 × the smallest so far.
    """

    type_name = "LRRangeTest"
    default_monitor: ClassVar[str] = "loss"
    uses_metric = True
    # avg: the moving average; best_loss: the smallest finite smoothed loss so far
    # (inf before any); stopped: the stop flag.
    state_fields = (*Scheduler.state_fields, "avg", "best_loss", "stopped")

    @dataclass(frozen=True)
    class Params:
        start_lr: float
        end_lr: float
        num_steps: int
        mode: str = "exp"

    def __init__(
        self, groups: list[Group], params: Params, *, monitor: str = default_monitor
    ) -> None:
        super().__init__(groups)
        _validate(params)
        self.params = params
        self.monitor = monitor
        self.avg = 0.0
        self.best_loss = math.inf
        self.stopped = False

    def lr_at(self, step: int) -> float:
        """The contract's formula, in its order of operations."""
        start_lr, end_lr, num_steps = (
            self.params.start_lr,
            self.params.end_lr,
            self.params.num_steps,
        )
        if self.params.mode == "exp":
            return start_lr * (end_lr / start_lr) ** (step / num_steps)
        return start_lr + (end_lr - start_lr) * step / num_steps

    def get_lr(self) -> list[float]:
        lr = self.lr_at(self.last_epoch)
        return [lr for _ in self.groups]

    def _advance(self, metrics: Metrics) -> None:
        if self._is_initial:
            super()._advance(None)
            return
        step = self.last_epoch + 1
        if step > self.params.num_steps:
            raise StepPastEnd(
                step,
                self.params.num_steps,
                f"the range test has {self.params.num_steps} steps; step {step} is past its end",
            )
        loss = read_metric(metrics, self.monitor)
        # Everything is computed before anything changes, so a refused step changes nothing.
        measured_lr = self.lr_at(step - 1)
        avg, smoothed = smooth(self.avg, loss, step)
        best_loss = min(self.best_loss, smoothed) if math.isfinite(smoothed) else self.best_loss
        reason = _divergence(smoothed, best_loss)

        self.avg = avg
        self.best_loss = best_loss
        if reason is not None and not self.stopped:
            self.stopped = True
            self.emit(
                "range_test_stop",
                encode_floats(
                    {
                        "step": step,
                        "reason": reason,
                        "lr": measured_lr,
                        "loss": loss,
                        "smoothed_loss": smoothed,
                        "min_smoothed_loss": best_loss,
                    }
                ),
            )
        super()._advance(None)


def smooth(avg: float, loss: float, step: int) -> tuple[float, float]:
    """One step of the bias-corrected moving average: (new average, smoothed loss at ``step``)."""
    avg = SMOOTHING * avg + NEW_LOSS_WEIGHT * loss
    return avg, avg / (1 - SMOOTHING**step)


def smoothed_curve(measured_lrs: Sequence[float], losses: Sequence[float]) -> list[list[float]]:
    """``[[lr, smoothed_loss], ...]`` for steps 1 … n, from what the steps recorded.

    ``measured_lrs[k - 1]`` is the lr step k's batch trained with (the lr recorded at
    step k − 1) and ``losses[k - 1]`` the loss reported with step k.
    """
    avg = 0.0
    curve = []
    for step, (lr, loss) in enumerate(zip(measured_lrs, losses, strict=True), start=1):
        avg, smoothed = smooth(avg, loss, step)
        curve.append([lr, smoothed])
    return curve


def _validate(params: LRRangeTest.Params) -> None:
    for name in ("start_lr", "end_lr"):
        try:
            float(getattr(params, name))
        except OverflowError:
            # JSON ints have no size limit; the formula needs floats.
            raise InvalidConfig(("params", name), f"{name} is too large to be a float") from None
    if not (params.start_lr > 0 and math.isfinite(params.start_lr)):
        raise InvalidConfig(
            ("params", "start_lr"), f"start_lr must be a finite number > 0, got {params.start_lr}"
        )
    if not (params.end_lr > params.start_lr and math.isfinite(params.end_lr)):
        raise InvalidConfig(
            ("params", "end_lr"),
            f"end_lr must be a finite number > start_lr ({params.start_lr}), got {params.end_lr}",
        )
    if not math.isfinite(params.end_lr / params.start_lr):
        raise InvalidConfig(("params", "end_lr"), "end_lr / start_lr is too large to be a float")
    num_steps = params.num_steps
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise InvalidConfig(
            ("params", "num_steps"), f"num_steps must be an int >= 1, got {num_steps!r}"
        )
    if num_steps > MAX_NUM_STEPS:
        raise InvalidConfig(
            ("params", "num_steps"), f"num_steps must be at most {MAX_NUM_STEPS}, got {num_steps}"
        )
    if params.mode not in MODES:
        raise InvalidConfig(
            ("params", "mode"), f"mode must be 'exp' or 'linear', got {params.mode!r}"
        )


def _divergence(smoothed: float, best_loss: float) -> str | None:
    """Why this step counts as divergence, or None."""
    if not math.isfinite(smoothed):
        return "non_finite_loss"
    if best_loss > 0 and smoothed > DIVERGENCE_FACTOR * best_loss:
        return "diverged"
    return None


def suggest(
    curve: Sequence[Sequence[float | str]], mode: str = "exp", method: str = DEFAULT_METHOD
) -> dict[str, Any]:
    """Read a range test's smoothed curve ``[[lr, smoothed_loss], ...]``.

    Three ways to read a suggestion off it, all answered in ``suggestions`` by name;
    ``lr`` is the one ``method`` names:

    - ``steepest``: where the smoothed loss falls fastest. The slope is taken by central
      differences across 2 % of the points on each side (see :func:`_central_slopes`),
      against log10(lr) in mode "exp" (the sweep is even in log10(lr)) and against lr
      in mode "linear"; the first and last tenth of the points,
      where the average is least settled or the loss already explodes, and the
      points after the minimum are not candidates.
    - ``minimum``: the lr at the smallest smoothed loss, divided by 10 (also answered
      as ``min_loss_lr``): the minimum itself is already too high an lr to train at.
    - ``valley``: fastai's default, read in :func:`valley_index` on the points after
      the first tenth.

    Besides: ``base_lr`` / ``max_lr`` (Smith's bounds for CyclicLR): ``base_lr`` is the
    first point at which the loss has fallen by ``CLEAR_FALL_FRACTION`` (10 %) of its
    total fall, measured from its highest point before the minimum (outside the first
    tenth); ``max_lr`` is the point of the minimum, where it stops falling.

    Only the finite points before the first non-finite loss are read; fewer than
    10 of them raise :class:`NotEnoughData`. Non-finite values may come as the
    codec's strings (a stored state's curve).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be 'exp' or 'linear', got {mode!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    points = [(float(lr), float(loss)) for lr, loss in decode_floats([list(p) for p in curve])]
    if len(points) < MIN_SUGGESTION_STEPS:
        raise NotEnoughData(
            len(points),
            f"a suggestion needs at least {MIN_SUGGESTION_STEPS} steps; {len(points)} so far",
        )
    usable = _finite_prefix(points)
    if len(usable) < MIN_SUGGESTION_STEPS:
        raise NotEnoughData(
            len(usable),
            f"the loss became non-finite after {len(usable)} steps; a suggestion needs "
            f"{MIN_SUGGESTION_STEPS} finite ones",
        )
    lrs = [lr for lr, _ in usable]
    losses = [loss for _, loss in usable]
    positions = [math.log10(lr) for lr in lrs] if mode == "exp" else lrs
    count = len(usable)
    edge = count // 10
    lowest = min(range(count), key=losses.__getitem__)

    slopes = _central_slopes(positions, losses)
    window = [i for i in range(edge, count - edge) if i in slopes]
    falling = [i for i in window if i <= lowest] or window
    steepest = min(falling, key=slopes.__getitem__) if falling else lowest

    before_lowest = range(edge, lowest + 1) if lowest >= edge else range(lowest + 1)
    highest = max(before_lowest, key=losses.__getitem__)
    total_fall = losses[highest] - losses[lowest]
    clear_start = next(
        i
        for i in range(highest, lowest + 1)
        if losses[highest] - losses[i] >= CLEAR_FALL_FRACTION * total_fall
    )
    suggestions = {
        "steepest": lrs[steepest],
        "minimum": lrs[lowest] / 10,
        "valley": lrs[edge + valley_index(losses[edge:])],
    }
    return {
        "lr": suggestions[method],
        "min_loss_lr": suggestions["minimum"],
        "base_lr": lrs[clear_start],
        "max_lr": lrs[lowest],
        "method": method,
        "suggestions": suggestions,
        "curve": [[lr, loss] for lr, loss in points],
    }


def valley_index(losses: Sequence[float]) -> int:
    """fastai's ``valley`` (``fastai.callback.schedule``): the index of the suggestion.

    fastai's docs: it "takes the steepest slope roughly 2/3 through the longest valley".
    The rule, exactly as fastai computes it:

    1. ``length[i]``: the length of the longest strictly falling subsequence of the
       losses that ends at point i (not necessarily contiguous points).
    2. ``end``: the first point whose ``length`` is the largest; ``start = end − length[end]``
       (one point before where that valley begins when its points are contiguous).
    3. ``L = end − start``; the suggestion is at ``start + int(L / 3) + int(L / 6)``:
       a third of the valley, then half a third more.

    Despite the docs' "2/3", step 3 lands about halfway through the valley's points,
    which on a sweep even in log10(lr) is halfway down it in decades: we copy the
    arithmetic, not the sentence. fastai computes step 1 with a double loop, O(n²), and
    can remember ``start`` from a partly counted ``length[end]``; here patience sorting
    gives the same lengths in O(n log n) (10,000 points in milliseconds) and ``start``
    uses the whole length. An index below 0 (a valley from the first point) is 0.
    """
    # tails[k]: the least negated loss that ends a falling subsequence of length k + 1 so far
    # (negated, so "falling" is "rising" and the list stays sorted for bisect).
    tails: list[float] = []
    end, longest = 0, 0
    for index, loss in enumerate(losses):
        position = bisect.bisect_left(tails, -loss)
        if position == len(tails):
            tails.append(-loss)
        else:
            tails[position] = -loss
        if position + 1 > longest:
            end, longest = index, position + 1
    start = end - longest
    sections = (end - start) / 3
    return max(0, start + int(sections) + int(sections / 2))


def _finite_prefix(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    for index, (lr, loss) in enumerate(points):
        if not (math.isfinite(loss) and math.isfinite(lr)):
            return points[:index]
    return points


def _central_slopes(positions: list[float], losses: list[float]) -> dict[int, float]:
    """d loss / d position at each point with ``reach`` neighbours on both sides.

    A dense sweep's neighbouring points differ by less than its noise, so the slope is
    taken across ``reach`` = 2 % of the points each side (1 for short curves): plain
    central differences, over a span wide enough for the noise to average out.
    """
    reach = max(1, len(positions) // SLOPE_SPAN_DIVISOR)
    slopes = {}
    for i in range(reach, len(positions) - reach):
        run = positions[i + reach] - positions[i - reach]
        if run > 0:
            slopes[i] = (losses[i + reach] - losses[i - reach]) / run
    return slopes
