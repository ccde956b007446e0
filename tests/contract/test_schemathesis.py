"""schemathesis, every check and its stateful phase, against a real server on each backend.

The CLI runs in a subprocess (its own event loop and threads stay out of pytest's),
against ``lrkeeper serve`` with tokens configured and a write token sent, so every
operation is reachable. The run is seeded and bounded in examples and time, so CI
repeats the same inputs each time; the JSON report says what ran and what failed.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ACCESS_TOKENS, BACKENDS, Backend, ReliabilityLog, ServerFactory

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 9
MAX_EXAMPLES = 40
# The budget for the whole run; the subprocess deadline only catches a hang.
MAX_SECONDS = 80
HANG_DEADLINE_SECONDS = MAX_SECONDS * 3


def run_schemathesis(base_url: str, report: Path) -> dict[str, Any]:
    """``st run`` with every check; returns its JSON report. Its cache goes next to the report."""
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file", str(CONFIG),
        "run", f"{base_url}/openapi.json",
        "--header", f"Authorization: Bearer {ACCESS_TOKENS.write}",
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--seed", str(SEED),
        "--max-examples", str(MAX_EXAMPLES),
        "--max-time", str(MAX_SECONDS),
        "--workers", "1",
        "--no-shrink",
        "--report", "json",
        "--report-json-path", str(report),
    ]  # fmt: skip
    finished = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=HANG_DEADLINE_SECONDS,
        check=False,
        cwd=report.parent,
    )
    assert report.exists(), f"schemathesis wrote no report:\n{finished.stdout}\n{finished.stderr}"
    outcome: dict[str, Any] = json.loads(report.read_text())
    outcome["output"] = finished.stdout[-20000:]
    return outcome


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_schemathesis_finds_no_failure_on_any_operation(
    backend: Backend,
    server_factory: ServerFactory,
    reliability: ReliabilityLog,
    tmp_path: Path,
) -> None:
    server = server_factory(backend, environment={"LRKEEPER_TOKENS": ACCESS_TOKENS.setting})

    outcome = run_schemathesis(server.base_url, tmp_path / "schemathesis.json")

    operations = outcome["operations"]["tested"]
    cases = outcome["test_cases"]["generated"]
    failures = outcome["test_cases"]["unique_failures"]
    runs = count_runs(server.base_url)
    print(
        f"schemathesis ({backend}): {operations} operations, {cases} cases, "
        f"{runs} runs created, {failures} failures"
    )
    reliability.record(
        f"schemathesis ({backend})",
        operations=operations,
        cases=cases,
        runs_created=runs,
        failures=failures,
    )
    assert outcome["errors"] == [], outcome["output"]
    assert outcome["failures"] == [], outcome["output"]
    assert operations == outcome["operations"]["selected"] > 0
    assert all(status != "skipped" for status in _phase_statuses(outcome)), outcome["phases"]


def count_runs(base_url: str) -> int:
    """How many runs the fuzzer's requests created: how far past refusals it got."""
    headers = {"Authorization": f"Bearer {ACCESS_TOKENS.read}"}
    count, cursor = 0, None
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
        while True:
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = client.get("/v1/runs", params=params).json()
            count += len(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return count


def _phase_statuses(outcome: dict[str, Any]) -> list[str]:
    return [phase["status"] for phase in outcome["phases"].values()]
