"""``find_lr``: an LR range test (Smith 2017; fastai's ``lr_find``, Lightning's tuner) run in
a torch training loop, the schedule and the suggestion kept by lrkeeper.

The lr grows from ``start_lr`` to ``end_lr`` over ``num_steps`` batches (an
``LRRangeTest`` run); each batch's loss is reported as the run's monitored metric;
the loop ends when the service answers ``stop`` (the smoothed loss has blown up) or
the sweep is done; then the model and the optimizer are put back exactly as they
were, so the caller trains from where it stood, with the suggested lr.

torch is never imported: the model, optimizer, loss and batches are only called, the
way torch's are (``state_dict``, ``zero_grad``, ``backward``, ``step``).
"""

import copy
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from client.api import LRKeeper, LrSuggestion, SuggestionMethod
from client.scheduler import RemoteLRScheduler

DEFAULT_METHOD: SuggestionMethod = "valley"


@dataclass(frozen=True)
class LrFinding:
    """What a range test found: ``lr`` by ``method``, every method's suggestion, Smith's
    CyclicLR bounds, and the run to look at (``lrkeeper lr-suggestion RUN_ID --chart``)."""

    run_id: str
    lr: float
    method: str
    suggestions: dict[str, float]
    base_lr: float
    max_lr: float
    steps: int
    stopped: bool
    curve: list[tuple[float, float]]

    @classmethod
    def from_suggestion(
        cls, run_id: str, suggestion: LrSuggestion, *, steps: int, stopped: bool
    ) -> "LrFinding":
        return cls(
            run_id=run_id,
            lr=suggestion.lr,
            method=suggestion.method,
            suggestions=dict(suggestion.suggestions),
            base_lr=suggestion.base_lr,
            max_lr=suggestion.max_lr,
            steps=steps,
            stopped=stopped,
            curve=list(suggestion.curve),
        )


def find_lr(
    model: Any,
    optimizer: Any,
    loss_fn: Callable[[Any, Any], Any],
    batches: Iterable[tuple[Any, Any]],
    run_id: str | None = None,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    mode: str = "exp",
    method: SuggestionMethod = DEFAULT_METHOD,
    client: LRKeeper | None = None,
    url: str | None = None,
    token: str | None = None,
) -> LrFinding:
    """Sweep the lr over ``num_steps`` batches of ``batches`` (``(inputs, targets)`` pairs,
    taken again from the start when they run out), training ``model`` with ``optimizer``
    on ``loss_fn(model(inputs), targets)``, and return what the run suggests.

    ``run_id`` names the run (default: a new ``lr-find-<hex>``); a run of that name must
    not have stepped yet. ``method`` picks ``lr`` (fastai's default, ``valley``; every
    method's is in ``suggestions``). Whatever happens, the model's and the optimizer's
    state (parameters, buffers, moments, param groups) and the model's train/eval mode
    are restored from deep copies taken first.
    """
    run_id = run_id if run_id is not None else f"lr-find-{uuid.uuid4().hex[:12]}"
    owns_client = client is None
    keeper = client if client is not None else LRKeeper(url, token)
    model_state = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    was_training = model.training
    config = {
        "type": "LRRangeTest",
        "params": {"start_lr": start_lr, "end_lr": end_lr, "num_steps": num_steps, "mode": mode},
        "monitor": "loss",
    }
    try:
        # Blocking: each step's answer carries ``stop``, read before the next batch.
        scheduler = RemoteLRScheduler(optimizer, run_id, config, client=keeper, pipelined=False)
        steps, stopped = 0, False
        try:
            model.train()
            for inputs, targets in _cycled(batches, num_steps):
                optimizer.zero_grad()
                loss = loss_fn(model(inputs), targets)
                loss.backward()
                optimizer.step()
                answer = scheduler.step(float(loss.detach()))
                steps += 1
                if answer.stop:
                    stopped = True
                    break
            scheduler.finish()
        finally:
            scheduler.close()
        suggestion = keeper.lr_suggestion(run_id, method)
    finally:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        model.train(was_training)
        if owns_client:
            keeper.close()
    return LrFinding.from_suggestion(run_id, suggestion, steps=steps, stopped=stopped)


def _cycled(batches: Iterable[tuple[Any, Any]], count: int) -> Iterator[tuple[Any, Any]]:
    """``count`` batches, starting ``batches`` over when a pass ends (a list, a DataLoader);
    a one-shot iterator that runs out ends the sweep early."""
    given = 0
    while given < count:
        in_this_pass = 0
        for batch in batches:
            yield batch
            given += 1
            in_this_pass += 1
            if given == count:
                return
        if in_this_pass == 0 or iter(batches) is batches:
            return
