"""A pipelined worker SIGKILLed at random points loses no acknowledged step and resumes exactly.

The worker (pipeline_worker.py) trains with a loop that never waits for an answer, so a
kill lands anywhere: between ``step()`` and the send, with the report on the wire,
after the service committed it but before the worker heard, or after the answer was
applied. Whatever the worker saw acknowledged (the values an optimizer step used) is
in the run; the next process resumes at the run's step; and every value any worker
used, and the run's whole history, equal an uninterrupted torch run.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from client import LRKeeper
from tests.client.test_crash import CONFIG, TOTAL_STEPS, assert_history_matches_torch, torch_values
from tests.conftest import LiveServer, ReliabilityLog

pytestmark = [pytest.mark.torch, pytest.mark.slow]

WORKER = Path(__file__).with_name("pipeline_worker.py")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
KILLS = 4
# Lines (optimizer steps) a worker lives for before its kill, and the extra moment after.
MAX_STEPS_BEFORE_KILL = 15
MAX_KILL_DELAY_SECONDS = 0.004
PROCESS_DEADLINE_SECONDS = 180


def start_worker(base_url: str, run_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(sys.executable, str(WORKER), "--url", base_url, "--run-id", run_id),
            *("--config", json.dumps(CONFIG), "--steps", str(TOTAL_STEPS)),
        ],
        cwd=PROJECT_ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("LRKEEPER_")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def step_of(line: dict[str, Any]) -> int:
    for key in ("resumed_at", "used_after", "done"):
        if key in line:
            return int(line[key])
    raise AssertionError(f"unexpected line {line}")


def test_pipelined_worker_killed_at_random_points_loses_nothing_acknowledged_and_resumes(
    keeper: LRKeeper, live_server: LiveServer, run_id: str, reliability: ReliabilityLog
) -> None:
    expected = torch_values()
    seed = random.randrange(2**32)
    chance = random.Random(seed)
    every_line: list[dict[str, Any]] = []
    kills = 0
    run_step = 0  # the run does not exist yet; the first worker creates it
    for _ in range(KILLS):
        worker = start_worker(live_server.base_url, run_id)
        assert worker.stdout is not None and worker.stderr is not None
        first = json.loads(worker.stdout.readline() or "{}")
        assert first.get("resumed_at") == run_step, f"seed {seed}: {first}"
        lines = [first]
        for _ in range(chance.randint(1, MAX_STEPS_BEFORE_KILL)):
            raw = worker.stdout.readline()
            if not raw:
                break
            lines.append(json.loads(raw))
        time.sleep(chance.uniform(0, MAX_KILL_DELAY_SECONDS))
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        lines += [json.loads(raw) for raw in worker.stdout]  # printed before it died
        worker.stdout.close()
        worker.stderr.close()
        kills += 1
        every_line += lines

        acknowledged = max(step_of(line) for line in lines)
        run_step = keeper.get_run(run_id).step
        assert run_step >= acknowledged, f"seed {seed}: the run lost an acknowledged step"
        assert run_step < TOTAL_STEPS, f"seed {seed}: the worker finished before its kill"

    last = start_worker(live_server.base_url, run_id)
    out, err = last.communicate(timeout=PROCESS_DEADLINE_SECONDS)
    assert last.returncode == 0, err
    final_lines = [json.loads(raw) for raw in out.splitlines()]
    assert final_lines[0]["resumed_at"] == run_step, f"seed {seed}"
    assert final_lines[-1]["done"] == TOTAL_STEPS
    every_line += final_lines

    for line in every_line:
        step = step_of(line)
        assert (line["lr"], line["momentum"]) == expected[step], f"seed {seed}, step {step}"
    assert_history_matches_torch(keeper, run_id, expected)
    reliability.record(
        f"pipelined training process SIGKILLed at random points ({live_server.backend})",
        kills=kills,
        steps=TOTAL_STEPS,
        exact=True,
        lost=0,
        seed=seed,
    )
