"""With torch loaded, ``RemoteLRScheduler`` is also torch's scheduler class; without, the same.

Frameworks pick what to do with a scheduler by ``isinstance`` against torch's
classes (tests/integrations runs them); these tests pin the class choice and show
that the torch-derived scheduler and a torch-free process give the same values,
state dicts and rewinds.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from torch.optim import lr_scheduler

from client import LRKeeper, RemoteLRScheduler
from client.scheduler import _DEFAULT_MONITORS, _READS_DEFAULT_LR
from client.torch_flavour import METRIC_DRIVEN_TYPES
from service.schedules import scheduler_types
from tests.client.torch_free_worker import drive
from tests.client.training import make_optimizer, tiny_model
from tests.conftest import PROJECT_ROOT, LiveServer

pytestmark = pytest.mark.torch

WORKER = Path(__file__).with_name("torch_free_worker.py")
ONE_CYCLE = {"type": "OneCycleLR", "params": {"max_lr": [0.1, 0.05], "total_steps": 20}}
PLATEAU = {"type": "ReduceLROnPlateau", "params": {"patience": 0}, "monitor": "val_loss"}
RANGE_TEST = {"type": "LRRangeTest", "params": {"start_lr": 1e-4, "end_lr": 1.0, "num_steps": 10}}


def remote(keeper: LRKeeper, run_id: str, config: dict[str, Any] | None) -> RemoteLRScheduler:
    return RemoteLRScheduler(make_optimizer("sgd", tiny_model()), run_id, config, client=keeper)


def test_step_schedules_are_torchs_lr_scheduler(keeper: LRKeeper, run_id: str) -> None:
    scheduler = remote(keeper, run_id, ONE_CYCLE)
    assert isinstance(scheduler, lr_scheduler.LRScheduler)
    assert not isinstance(scheduler, lr_scheduler.ReduceLROnPlateau)
    assert isinstance(scheduler, RemoteLRScheduler)
    assert type(scheduler).__name__ == "RemoteLRScheduler"
    assert type(remote(keeper, run_id, ONE_CYCLE)) is type(scheduler), "made once"


@pytest.mark.parametrize("config", [PLATEAU, RANGE_TEST], ids=["plateau", "range-test"])
def test_metric_driven_schedules_are_torchs_reduce_lr_on_plateau(
    keeper: LRKeeper, run_id: str, config: dict[str, Any]
) -> None:
    assert isinstance(remote(keeper, run_id, config), lr_scheduler.ReduceLROnPlateau)


def test_attaching_to_a_plateau_run_takes_the_class_of_the_runs_config(
    keeper: LRKeeper, run_id: str
) -> None:
    remote(keeper, run_id, PLATEAU)
    assert isinstance(remote(keeper, run_id, None), lr_scheduler.ReduceLROnPlateau)


def test_metric_driven_types_are_those_with_a_default_monitor() -> None:
    assert set(_DEFAULT_MONITORS) == METRIC_DRIVEN_TYPES


def test_the_clients_type_facts_agree_with_the_services_registry() -> None:
    """The client cannot import the service: its copies of the registry's facts are checked."""
    described = scheduler_types()
    assert {
        entry["type"]: entry["default_monitor"] for entry in described if entry["uses_metric"]
    } == _DEFAULT_MONITORS
    assert {
        entry["type"]
        for entry in described
        if any(param["name"] == "lr_init" for param in entry["params"])
    } == _READS_DEFAULT_LR


def test_torchs_constructor_never_wraps_the_optimizers_step(keeper: LRKeeper, run_id: str) -> None:
    """torch's __init__ would patch optimizer.step to warn about call order; ours never runs."""
    scheduler = remote(keeper, run_id, ONE_CYCLE)
    assert not hasattr(scheduler.optimizer.step, "_wrapped_by_lr_sched")
    assert scheduler.get_lr() == scheduler.get_last_lr()


def test_torch_free_process_sees_the_same_values_state_and_rewinds(
    live_server: LiveServer, keeper: LRKeeper, run_id: str
) -> None:
    with_torch = drive(remote(keeper, f"{run_id}-torch", ONE_CYCLE))
    completed = subprocess.run(
        [
            sys.executable,
            str(WORKER),
            live_server.base_url,
            f"{run_id}-free",
            json.dumps(ONE_CYCLE),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    without_torch = json.loads(completed.stdout)
    assert without_torch.pop("class") == ["RemoteLRScheduler", "object"]
    assert without_torch.pop("loaded") == []
    assert without_torch == json.loads(json.dumps(with_torch))
