"""SIGKILL a framework's training process mid-run, start it again, collect every step it took.

The first process is killed once it has reported a step past a checkpoint (so
the framework has a checkpoint to resume from and the run has gone beyond it);
the second resumes from that checkpoint, which rewinds the run, and trains to
the end. Both processes' lines come back, so a test checks each against torch.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.integrations.frameworks import CHECKPOINT_EVERY, STEPS

WORKER = Path(__file__).with_name("crash_worker.py")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Generous: two shared CPUs; a hang fails the test instead of blocking the suite.
PROCESS_DEADLINE_SECONDS = 240
# Past the second checkpoint, so the killed process had gone on beyond the one it resumes from.
KILL_AFTER_STEP = 2 * CHECKPOINT_EVERY + 2

StepLine = tuple[int, list[float]]
# The worker's lines begin so; frameworks print their own (the Trainer prints a dict, too).
STEP_LINE_START = '{"step": '


def _start(
    framework: str, base_url: str, run_id: str, checkpoint_dir: Path
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(sys.executable, str(WORKER), framework, "--url", base_url, "--run-id", run_id),
            *("--checkpoint-dir", str(checkpoint_dir), "--steps", str(STEPS)),
        ],
        cwd=PROJECT_ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("LRKEEPER_")},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _step_lines(output: list[str]) -> list[StepLine]:
    parsed = (json.loads(line) for line in output if line.startswith(STEP_LINE_START))
    return [(int(line["step"]), line["lr"]) for line in parsed]


def kill_and_resume(
    framework: str, base_url: str, run_id: str, checkpoint_dir: Path
) -> tuple[list[StepLine], list[StepLine]]:
    """The step lines of the killed process and of the one that resumed after it."""
    first = _start(framework, base_url, run_id, checkpoint_dir)
    assert first.stdout is not None
    before_kill: list[str] = []
    for raw in first.stdout:
        before_kill.append(raw)
        if raw.startswith(STEP_LINE_START) and json.loads(raw)["step"] >= KILL_AFTER_STEP:
            break
    first.send_signal(signal.SIGKILL)
    first.wait()
    before_kill += list(first.stdout)
    first.stdout.close()

    second = _start(framework, base_url, run_id, checkpoint_dir)
    out, _ = second.communicate(timeout=PROCESS_DEADLINE_SECONDS)
    assert second.returncode == 0, f"the resumed {framework} run failed"
    return _step_lines(before_kill), _step_lines(out.splitlines())
