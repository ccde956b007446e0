"""Docker smoke probe: phase 1 creates a run and reports steps; phase 2 proves they survived.

Runs on the CI host inside the container's network namespace, with only the
standard library (the host's python3 has no project packages).
"""

import json
import os
import sys
import urllib.request

BASE_URL = os.environ["BASE_URL"]
PHASE = os.environ["PHASE"]
RUN = "docker-smoke-run"
CONFIG = {"type": "CosineAnnealingLR", "params": {"T_max": 10}}


def call(method: str, path: str, body: object | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        BASE_URL + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.load(response)


if PHASE == "1":
    status, _ = call("PUT", f"/v1/runs/{RUN}", {"scheduler": CONFIG, "param_groups": [{"lr": 0.1}]})
    assert status in (200, 201), status
    for step in range(1, 6):
        status, answer = call("POST", f"/v1/runs/{RUN}/steps", {"step": step})
        assert status == 200 and answer["step"] == step, answer
    _, lr = call("GET", f"/v1/runs/{RUN}/lr")
    with open("/tmp/lrkeeper-smoke-lr.json", "w") as saved:
        json.dump(lr, saved)
else:
    _, run = call("GET", f"/v1/runs/{RUN}")
    assert run["step"] == 5, run
    _, lr = call("GET", f"/v1/runs/{RUN}/lr")
    with open("/tmp/lrkeeper-smoke-lr.json") as saved:
        assert lr == json.load(saved), (lr, "changed across the restart")
    _, history = call("GET", f"/v1/runs/{RUN}/history")
    assert [item["step"] for item in history["items"]] == [0, 1, 2, 3, 4, 5], history
    status, answer = call("POST", f"/v1/runs/{RUN}/steps", {"step": 6})
    assert status == 200 and answer["step"] == 6 and not answer["replayed"], answer
print(f"smoke probe phase {PHASE}: ok")
sys.exit(0)
