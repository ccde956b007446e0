"""API.md "Hugging Face's schedules" through the real server, on both backends.

A run of an ``hf:`` type is created, stepped (one by one and by catch-up) and read
back; its values are transformers' own (``get_scheduler`` on a torch optimizer,
tests/schedules/test_hf.py's oracle), float for float. Refusals name the field.
"""

from typing import Any

import httpx
import pytest

from tests.service.test_steps_contract import (
    assert_invalid,
    create_run,
    get_run,
    report_ok,
)

pytest.importorskip("transformers")

from tests.schedules.test_hf import run_transformers

pytestmark = pytest.mark.torch

TWO_GROUPS = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.02, "momentum": 0.9}]
WSD = {
    "type": "hf:warmup_stable_decay",
    "params": {"num_warmup_steps": 3, "num_decay_steps": 6, "num_training_steps": 14},
}


def transformers_lrs(config: dict[str, Any], steps: int, metrics: list[float] | None = None) -> Any:
    """What transformers' scheduler leaves in the optimizer, as JSON numbers."""
    default_lr = config["params"].get("lr_init", TWO_GROUPS[0]["lr"])
    outcome = run_transformers(config, TWO_GROUPS, default_lr, steps, metrics)
    assert outcome.failed_at is None, outcome.failure
    return [[float(value) for value in lrs] for lrs in outcome.lrs]


def test_an_hf_run_steps_through_transformers_values(client: httpx.Client) -> None:
    expected = transformers_lrs(WSD, 16)
    run_id = create_run(client, WSD, TWO_GROUPS)
    assert get_run(client, run_id)["lr"] == expected[0]
    for step in range(1, 6):
        assert report_ok(client, run_id, step)["lr"] == expected[step], f"step {step}"
    # A metric-free schedule catches up across a gap, recording every step.
    assert report_ok(client, run_id, 16)["lr"] == expected[16]
    history = client.get(f"/v1/runs/{run_id}/history").json()["items"]
    assert [item["lr"] for item in history] == expected


def test_an_hf_run_stores_its_config_with_transformers_defaults(client: httpx.Client) -> None:
    run_id = create_run(client, WSD, TWO_GROUPS)
    params = get_run(client, run_id)["scheduler"]["params"]
    assert params == {
        **WSD["params"],
        "num_stable_steps": None,
        "warmup_type": "linear",
        "decay_type": "cosine",
        "min_lr_ratio": 0,
        "num_cycles": 0.5,
    }


def test_hf_plateau_reads_eval_loss_by_default(client: httpx.Client) -> None:
    config = {"type": "hf:reduce_lr_on_plateau", "params": {"patience": 0, "factor": 0.5}}
    losses = [1.0, 1.0, 0.5, 0.7]
    expected = transformers_lrs(config, len(losses), losses)
    run_id = create_run(client, config, TWO_GROUPS)
    assert get_run(client, run_id)["scheduler"]["monitor"] == "eval_loss"
    for step, loss in enumerate(losses, start=1):
        answer = report_ok(client, run_id, step, metrics={"eval_loss": loss})
        assert answer["lr"] == expected[step]
    assert expected[-1] != expected[0]


def test_hf_child_of_a_sequential_run(client: httpx.Client) -> None:
    config = {
        "type": "SequentialLR",
        "params": {
            "schedulers": [
                {"type": "hf:constant_with_warmup", "params": {"num_warmup_steps": 4}},
                {"type": "ExponentialLR", "params": {"gamma": 0.9}},
            ],
            "milestones": [6],
        },
    }
    expected = transformers_lrs(config, 10)
    run_id = create_run(client, config, TWO_GROUPS)
    assert report_ok(client, run_id, 10)["lr"] == expected[10]


@pytest.mark.parametrize(
    ("scheduler", "field"),
    [
        ({"type": "hf:linear", "params": {"num_warmup_steps": 3}}, "num_training_steps"),
        ({"type": "hf:cosine_with_min_lr", "params": WSD["params"]}, "num_decay_steps"),
        (
            {
                "type": "hf:polynomial",
                "params": {"num_warmup_steps": 1, "num_training_steps": 9, "lr_end": 0.2},
            },
            "lr_end",
        ),
    ],
)
def test_configs_transformers_refuses_are_a_422_naming_the_field(
    client: httpx.Client, scheduler: dict[str, Any], field: str
) -> None:
    response = client.put(
        "/v1/runs/hf-refused", json={"scheduler": scheduler, "param_groups": TWO_GROUPS}
    )
    assert_invalid(response, ["body", "scheduler", "params", field])
