"""The document itself, built in-process: what a generated client and a fuzzer read from it."""

import json
from typing import Any

import pytest

from service.config import Settings
from service.main import create_app
from service.problems import PROBLEM_MEDIA_TYPE
from service.request_schemas import ENGINE_BOUNDS
from service.schedules.errors import InvalidConfig
from service.schedules.registry import SCHEDULER_TYPES, build

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    database = tmp_path_factory.mktemp("openapi") / "unused.db"
    settings = Settings(
        database_url=f"sqlite:///{database}", max_list_limit=250, max_preview_steps=5000
    )
    document: dict[str, Any] = create_app(settings).openapi()
    return document


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, by_method in document["paths"].items()
        for method, operation in by_method.items()
    ]


def test_every_error_answer_is_the_problem_schema_as_problem_json(
    document: dict[str, Any],
) -> None:
    for path, method, operation in operations(document):
        for status, answer in operation["responses"].items():
            if status[0] in "45":
                assert answer["content"] == {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}}, (
                    method,
                    path,
                    status,
                )


def test_every_v1_operation_declares_the_token_refusals_and_bodies_their_refusals(
    document: dict[str, Any],
) -> None:
    for path, method, operation in operations(document):
        declared = set(operation["responses"])
        if path.startswith("/v1/"):
            assert {"401", "403", "500"} <= declared, (method, path)
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
        if "requestBody" in operation:
            assert {"400", "413", "415", "422"} <= declared, (method, path)
        if path.startswith("/v1/runs"):
            assert "Retry-After" in operation["responses"]["503"]["headers"], (method, path)


def test_operation_ids_are_the_names_a_client_calls(document: dict[str, Any]) -> None:
    ids = {operation["operationId"] for _, _, operation in operations(document)}
    assert {
        "put_run", "get_run", "list_runs", "update_run", "report_step", "get_lr", "set_lr",
        "rewind_run", "get_history", "get_events", "preview", "list_scheduler_types",
        "get_lr_suggestion",
    } <= ids  # fmt: skip
    assert len(ids) == len(operations(document))


def test_head_is_not_a_second_operation_next_to_get(document: dict[str, Any]) -> None:
    assert all(method != "head" for _, method, _ in operations(document))


def test_a_put_declares_location_and_answers_declare_the_request_id(
    document: dict[str, Any],
) -> None:
    put = document["paths"]["/v1/runs/{run_id}"]["put"]["responses"]
    assert "Location" in put["201"]["headers"]
    for _, _, operation in operations(document):
        answers = operation["responses"].values()
        assert all("X-Request-ID" in answer["headers"] for answer in answers)


def test_timestamps_are_date_times(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for model, field in [
        ("Run", "created_at"),
        ("Run", "updated_at"),
        ("HistoryItem", "recorded_at"),
        ("EventItem", "recorded_at"),
    ]:
        assert schemas[model]["properties"][field]["format"] == "date-time"


def test_scheduler_config_has_one_variant_per_registered_type(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    union = schemas["SchedulerConfig"]
    assert union["discriminator"]["propertyName"] == "type"
    assert set(union["discriminator"]["mapping"]) == set(SCHEDULER_TYPES)
    assert "monitor" in schemas["ReduceLROnPlateauConfig"]["properties"]
    assert "monitor" not in schemas["CosineAnnealingLRConfig"]["properties"]
    assert schemas["CosineAnnealingLRConfig"]["properties"]["params"]["required"] == ["T_max"]
    # hf: types, under names OpenAPI allows (no ":"), with get_scheduler's params and defaults.
    assert union["discriminator"]["mapping"]["hf:linear"].endswith("/HfLinearConfig")
    hf_linear = schemas["HfLinearConfig"]["properties"]
    assert hf_linear["type"]["enum"] == ["hf:linear"]
    assert hf_linear["params"]["required"] == ["num_warmup_steps", "num_training_steps"]
    assert "monitor" in schemas["HfReduceLrOnPlateauConfig"]["properties"]
    assert "HfCosineConfig" in str(schemas["ChildSchedulerConfig"])


def test_requests_are_as_strict_as_the_server(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert schemas["ParamGroup"]["required"] == ["lr"]
    patch = schemas["RunPatch"]["properties"]
    assert "null" not in str(patch["status"]) and "null" not in str(patch["metadata"])
    list_runs = document["paths"]["/v1/runs"]["get"]["parameters"]
    limit = next(parameter for parameter in list_runs if parameter["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 250)
    status = next(parameter for parameter in list_runs if parameter["name"] == "status")
    assert "stale" in str(status["schema"])
    steps = schemas["PreviewRequest"]["properties"]["steps"]
    assert (steps["minimum"], steps["maximum"]) == (0, 5000)
    lr_at = document["paths"]["/v1/runs/{run_id}/lr"]["get"]["parameters"]
    step = next(parameter for parameter in lr_at if parameter["name"] == "step")
    assert {"minimum": 0, "maximum": 2**31 - 1}.items() <= step["schema"]["anyOf"][0].items()


def test_every_parameter_bound_is_spelled_as_json_schema_spells_it(
    document: dict[str, Any],
) -> None:
    """pydantic's own names (ge, le) are not JSON Schema: a validator, a fuzzer and a
    generated client would all read the parameter as unbounded."""
    for path, operations in document["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", ()):
                text = json.dumps(parameter["schema"])
                for name in ("ge", "le", "gt", "lt"):
                    assert f'"{name}":' not in text, (path, parameter["name"])


# Required parameters of the types whose bounds are declared; the rest need none.
VALID_PARAMS: dict[str, dict[str, Any]] = {
    "CosineAnnealingWarmRestarts": {"T_0": 1},
    "OneCycleLR": {"max_lr": 0.1, "total_steps": 10},
    "LRRangeTest": {"start_lr": 1e-4, "end_lr": 1.0, "num_steps": 10},
    "hf:inverse_sqrt": {"num_warmup_steps": 5},
    "hf:warmup_stable_decay": {"num_warmup_steps": 2, "num_decay_steps": 5, "num_stable_steps": 3},
}


def just_outside(bound: dict[str, Any]) -> Any:
    """A value the bound excludes, as close to it as the engine can tell apart."""
    if "enum" in bound:
        return "not-a-choice"
    if "exclusiveMinimum" in bound:
        return bound["exclusiveMinimum"]
    if "exclusiveMaximum" in bound:
        return bound["exclusiveMaximum"]
    if "maximum" in bound:
        return bound["maximum"] + 0.5
    return bound["minimum"] - 1


@pytest.mark.parametrize(("type_name", "parameter"), sorted(ENGINE_BOUNDS))
def test_each_declared_bound_is_one_the_engine_enforces(type_name: str, parameter: str) -> None:
    # A bound the engine does not enforce would make the document stricter than the server.
    params = VALID_PARAMS.get(type_name, {})
    build({"type": type_name, "params": params}, [{"lr": 0.1, "momentum": 0.9}])
    outside = {**params, parameter: just_outside(ENGINE_BOUNDS[type_name, parameter])}
    with pytest.raises(InvalidConfig) as refusal:
        build({"type": type_name, "params": outside}, [{"lr": 0.1, "momentum": 0.9}])
    assert refusal.value.loc == ("scheduler", "params", parameter)


def test_every_link_names_an_operation_its_parameters_and_fields_that_exist(
    document: dict[str, Any],
) -> None:
    """A link that points at nothing would send a fuzzer, or a reader, nowhere."""
    by_id = {
        operation["operationId"]: (path, operation) for path, _, operation in operations(document)
    }
    schemas = document["components"]["schemas"]
    linked = 0
    for _, _, operation in operations(document):
        for status, answer in operation["responses"].items():
            for name, link in answer.get("links", {}).items():
                linked += 1
                _, target = by_id[link["operationId"]]
                target_parameters = {
                    f"{parameter['in']}.{parameter['name']}"
                    for parameter in target.get("parameters", ())
                }
                for parameter, expression in link.get("parameters", {}).items():
                    assert parameter in target_parameters, (name, parameter)
                    assert_expression_resolves(expression, operation, status, schemas)
                for expression in link.get("requestBody", {}).values():
                    assert "requestBody" in target, name
                    assert_expression_resolves(expression, operation, status, schemas)
    assert linked >= 40


def assert_expression_resolves(
    expression: str, operation: dict[str, Any], status: str, schemas: dict[str, Any]
) -> None:
    source, _, pointer = expression.partition("#/")
    if source == "$response.body":
        schema = operation["responses"][status]["content"]["application/json"]["schema"]
    elif source == "$request.body":
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
    elif source.startswith("$response.header."):
        assert source.removeprefix("$response.header.") in operation["responses"][status]["headers"]
        return
    else:
        parameter = source.removeprefix("$request.path.")
        assert any(p["name"] == parameter and p["in"] == "path" for p in operation["parameters"])
        return
    resolved = schemas[schema["$ref"].rpartition("/")[2]]
    assert pointer in resolved["properties"], (expression, sorted(resolved["properties"]))
