"""OpenAPI links: how one answer leads to the next call on the same run.

A generated client's docs show them, and a stateful fuzzer (schemathesis) walks
them: without them it can only guess run ids and configs, and nearly every call
it makes after the first is a 404 or a refused config. With them it follows a
run's life as a trainer does: preview a config, create a run with exactly that
config, step it, read it, change its lr, rewind it, step it again.

Each link fills only what the earlier answer determines (the run id, a step
that exists, the run's current lr); everything else is left to the caller.
"""

import copy
from typing import Any

# The calls that take a run id in their path, by what they do to the run.
_READS_OF_A_RUN = (
    "get_run",
    "get_lr",
    "get_history",
    "get_events",
    "run_chart_svg",
    "run_chart_png",
)
_WRITES_ON_A_RUN = ("report_step", "set_lr", "rewind_run", "update_run")


def _run_links(run_id: str, step: str, lr: str) -> dict[str, dict[str, Any]]:
    """Every call on the run an answer names, with the step and lr it holds."""
    links: dict[str, dict[str, Any]] = {
        operation_id: {"operationId": operation_id, "parameters": {"path.run_id": run_id}}
        for operation_id in (*_READS_OF_A_RUN, *_WRITES_ON_A_RUN)
    }
    links["get_lr"]["parameters"]["query.step"] = step
    links["get_lr"]["description"] = "The lr recorded at the step this answer names"
    links["rewind_run"]["requestBody"] = {"step": step}
    links["rewind_run"]["description"] = "Back to the step this answer names"
    links["set_lr"]["requestBody"] = {"lr": lr}
    links["set_lr"]["description"] = "Set the lr by hand, one value per param group"
    links["report_step"]["description"] = "Report a later step of the same run"
    return links


_FROM_RUN = _run_links("$response.body#/run_id", "$response.body#/step", "$response.body#/lr")
_FROM_STEP = _run_links("$request.path.run_id", "$response.body#/step", "$response.body#/lr")
_FROM_PREVIEW = {
    "put_run": {
        "operationId": "put_run",
        "description": (
            "Create a run with the config just previewed. The run id is the caller's to"
            " choose; the X-Request-ID the service made for a request that sent none is"
            " one no run holds yet"
        ),
        "parameters": {"path.run_id": "$response.header.X-Request-ID"},
        # The body is exactly the previewed config: a tool that merges the link's body into
        # one it made up (schemathesis does, unless told) mixes two schedulers' params.
        "x-schemathesis": {"merge_body": False},
        "requestBody": {
            "scheduler": "$request.body#/scheduler",
            "param_groups": "$request.body#/param_groups",
        },
    }
}

# operationId -> status -> the links its answer carries.
LINKS: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "preview": {"200": _FROM_PREVIEW},
    "put_run": {"200": _FROM_RUN, "201": _FROM_RUN},
    "get_run": {"200": _FROM_RUN},
    "update_run": {"200": _FROM_RUN},
    "set_lr": {"200": _FROM_RUN},
    "rewind_run": {"200": _FROM_RUN},
    "report_step": {"200": _FROM_STEP},
    "get_lr": {"200": _FROM_STEP},
}


def add_links(operation: dict[str, Any]) -> None:
    """Attach the links of ``operation``'s successful answers, a copy each."""
    for status, links in LINKS.get(operation["operationId"], {}).items():
        answer = operation["responses"].get(status)
        if answer is not None:
            answer["links"] = copy.deepcopy(links)
