"""Every ``python`` block of README.md runs, verbatim, against a live server.

Each block runs as its own script in a fresh process, in an empty directory (so
nothing of the checkout but the installed package is importable, as for a
user), with ``LRKEEPER_URL`` pointing at the server. Blocks fenced as
``python fragment`` are excerpts of a larger program (the DDP recipes) and do not run.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from client import LRKeeper
from tests.conftest import PROJECT_ROOT, LiveServer

pytestmark = [pytest.mark.torch, pytest.mark.integrations, pytest.mark.slow]

# Only blocks whose info string is exactly "python": "python fragment" is an excerpt.
RUNNABLE_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
RUN_ID = re.compile(r'"([a-z]+-demo-\d+)"')
EXAMPLE_DEADLINE_SECONDS = 240


def readme_examples() -> dict[str, str]:
    """Each runnable block, named by the run it drives."""
    text = (PROJECT_ROOT / "README.md").read_text()
    blocks = RUNNABLE_BLOCK.findall(text)
    named = {RUN_ID.findall(block)[0]: block for block in blocks}
    assert len(named) == len(blocks), "every runnable README example drives a run of its own"
    return named


EXAMPLES = readme_examples()


def test_readme_shows_the_loop_each_trainer_and_find_lr() -> None:
    assert sorted(EXAMPLES) == [
        "accelerate-demo-1",
        "find-demo-1",
        "hf-demo-1",
        "lightning-demo-1",
        "linear-demo-1",
        "ranks-demo-1",
        "trainer-demo-1",
    ]


@pytest.mark.parametrize("run_id", sorted(EXAMPLES))
def test_readme_example_runs_verbatim_and_finishes_its_run(
    sqlite_server: LiveServer, run_id: str, tmp_path: Path
) -> None:
    script = tmp_path / "example.py"
    script.write_text(EXAMPLES[run_id])
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LRKEEPER_")}
    environment["LRKEEPER_URL"] = sqlite_server.base_url
    completed = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_DEADLINE_SECONDS,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    with LRKeeper(sqlite_server.base_url) as keeper:
        run = keeper.get_run(run_id)
        event_kinds = {event.kind for event in keeper.events(run_id)}
    params = run.scheduler["params"]
    if run.scheduler["type"] == "LRRangeTest":  # it ends where the loss blew up
        assert run.status == "finished"
        assert run.step >= 10
    elif run.ranks is not None:  # every step decided from every rank's metric
        assert run.status == "finished"
        assert run.step > 0
        assert "ranks_timed_out" not in event_kinds
    else:
        # torch's total_steps, or transformers' num_training_steps for an hf: schedule.
        assert run.step == params.get("total_steps", params.get("num_training_steps"))
