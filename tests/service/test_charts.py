"""Chart images (service.routes.charts): what the SVG draws, read back from its ids and paths.

The SVG keeps ids on what it draws (``lr-group-0``, ``metric-loss``,
``event-plateau_reduction-2``, ...) and text as text, so these tests read the
picture as a program would. A path's ``d`` is ``M x y L x y ...`` in pixels: with
``steps-post`` N points give 2N - 1 vertices, and a reduction is two vertices at
one x.
"""

import io
import itertools
import math
import statistics
import struct
import uuid
import xml.etree.ElementTree as ElementTree
from typing import Any

import httpx
import pytest
from PIL import Image

from service.charts.data import MAX_POINTS_DRAWN, keep_extremes
from service.schedules.registry import SCHEDULER_TYPES
from tests.conftest import LiveServer

SVG = "{http://www.w3.org/2000/svg}"
PROBLEM_MEDIA_TYPE = "application/problem+json"
SGD = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.05, "momentum": 0.8}]
PREVIEW_STEPS = 12
METRICS = [1.0, 0.9, 0.9, 0.9, 0.95, 1.2, 1.5, 2.0, 3.0, 6.0, 12.0, 30.0]

# One config per registered type; test_every_registered_type_has_an_example keeps it whole.
EXAMPLES: dict[str, dict[str, Any]] = {
    "LambdaLR": {"type": "LambdaLR", "params": {"lr_lambda": "0.9 ** epoch"}},
    "MultiplicativeLR": {"type": "MultiplicativeLR", "params": {"lr_lambda": "0.9"}},
    "StepLR": {"type": "StepLR", "params": {"step_size": 3, "gamma": 0.5}},
    "MultiStepLR": {"type": "MultiStepLR", "params": {"milestones": [2, 5]}},
    "ConstantLR": {"type": "ConstantLR", "params": {"factor": 0.5, "total_iters": 3}},
    "LinearLR": {"type": "LinearLR", "params": {"start_factor": 0.2, "total_iters": 4}},
    "ExponentialLR": {"type": "ExponentialLR", "params": {"gamma": 0.8}},
    "PolynomialLR": {"type": "PolynomialLR", "params": {"total_iters": 8, "power": 2.0}},
    "CosineAnnealingLR": {"type": "CosineAnnealingLR", "params": {"T_max": 10}},
    "CosineAnnealingWarmRestarts": {"type": "CosineAnnealingWarmRestarts", "params": {"T_0": 4}},
    "CyclicLR": {"type": "CyclicLR", "params": {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 3}},
    "OneCycleLR": {"type": "OneCycleLR", "params": {"max_lr": 0.5, "total_steps": 20}},
    "ReduceLROnPlateau": {"type": "ReduceLROnPlateau", "params": {"patience": 1}},
    "SequentialLR": {
        "type": "SequentialLR",
        "params": {
            "schedulers": [
                {"type": "LinearLR", "params": {"start_factor": 0.1, "total_iters": 3}},
                {"type": "ExponentialLR", "params": {"gamma": 0.9}},
            ],
            "milestones": [3],
        },
    },
    "ChainedScheduler": {
        "type": "ChainedScheduler",
        "params": {
            "schedulers": [
                {"type": "ConstantLR", "params": {"factor": 0.5, "total_iters": 2}},
                {"type": "ExponentialLR", "params": {"gamma": 0.9}},
            ]
        },
    },
    "LRRangeTest": {
        "type": "LRRangeTest",
        "params": {"start_lr": 1e-4, "end_lr": 1.0, "num_steps": PREVIEW_STEPS},
    },
    **{
        f"hf:{name}": {"type": f"hf:{name}", "params": params}
        for name, params in {
            "linear": {"num_warmup_steps": 3, "num_training_steps": PREVIEW_STEPS},
            "cosine": {"num_warmup_steps": 3, "num_training_steps": PREVIEW_STEPS},
            "cosine_with_restarts": {
                "num_warmup_steps": 2,
                "num_training_steps": PREVIEW_STEPS,
                "num_cycles": 2,
            },
            "polynomial": {
                "num_warmup_steps": 2,
                "num_training_steps": PREVIEW_STEPS,
                "power": 2.0,
                "lr_init": 0.1,
            },
            "constant": {},
            "constant_with_warmup": {"num_warmup_steps": 4},
            "inverse_sqrt": {"num_warmup_steps": 3},
            "reduce_lr_on_plateau": {"patience": 1},
            "cosine_with_min_lr": {
                "num_warmup_steps": 2,
                "num_training_steps": PREVIEW_STEPS,
                "min_lr_rate": 0.1,
            },
            "cosine_warmup_with_min_lr": {
                "num_warmup_steps": 2,
                "num_training_steps": PREVIEW_STEPS,
                "min_lr_rate": 0.1,
            },
            "warmup_stable_decay": {
                "num_warmup_steps": 2,
                "num_stable_steps": 4,
                "num_decay_steps": 5,
            },
        }.items()
    },
}
METRIC_DRIVEN = {"ReduceLROnPlateau", "LRRangeTest", "hf:reduce_lr_on_plateau"}
CYCLES_MOMENTUM = {"CyclicLR", "OneCycleLR"}


def svg_of(response: httpx.Response) -> ElementTree.Element:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("image/svg+xml")
    return ElementTree.fromstring(response.content)


def by_id(svg: ElementTree.Element, gid: str) -> ElementTree.Element:
    found = svg.find(f".//*[@id='{gid}']")
    assert found is not None, f"no element with id {gid!r}"
    return found


def vertices(group: ElementTree.Element) -> list[tuple[float, float]]:
    """The pixel vertices of the one path a line's group draws."""
    (path,) = group.iter(f"{SVG}path")
    tokens = path.attrib["d"].split()
    return [(float(tokens[i + 1]), float(tokens[i + 2])) for i in range(0, len(tokens), 3)]


def texts(svg: ElementTree.Element) -> set[str]:
    return {"".join(text.itertext()).strip() for text in svg.iter(f"{SVG}text")}


def preview_body(type_name: str, steps: int = PREVIEW_STEPS) -> dict[str, Any]:
    body: dict[str, Any] = {"scheduler": EXAMPLES[type_name], "param_groups": SGD, "steps": steps}
    if type_name in METRIC_DRIVEN:
        body["metrics"] = METRICS[:steps]
    return body


def new_run(client: httpx.Client, scheduler: dict[str, Any], groups: list[dict[str, Any]]) -> str:
    run_id = f"chart-{uuid.uuid4().hex[:12]}"
    created = client.put(
        f"/v1/runs/{run_id}", json={"scheduler": scheduler, "param_groups": groups}
    )
    assert created.status_code == 201, created.text
    return run_id


def report(client: httpx.Client, run_id: str, step: int, **metrics: float) -> dict[str, Any]:
    answer = client.post(f"/v1/runs/{run_id}/steps", json={"step": step, "metrics": metrics})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


@pytest.fixture(scope="module")
def preview_client(sqlite_server: LiveServer) -> Any:
    # Previews store nothing, so one backend says all there is to say about them.
    with httpx.Client(base_url=sqlite_server.base_url, timeout=60) as http:
        yield http


def test_every_registered_type_has_an_example() -> None:
    assert set(EXAMPLES) == set(SCHEDULER_TYPES)


@pytest.mark.parametrize("type_name", sorted(EXAMPLES))
def test_a_preview_chart_draws_every_group_at_every_step_with_a_legend(
    preview_client: httpx.Client, type_name: str
) -> None:
    svg = svg_of(preview_client.post("/v1/preview/chart.svg", json=preview_body(type_name)))
    values = preview_client.post("/v1/preview", json=preview_body(type_name)).json()

    for group in range(len(SGD)):
        drawn = vertices(by_id(svg, f"lr-group-{group}"))
        assert len(drawn) == 2 * (PREVIEW_STEPS + 1) - 1  # steps-post
        xs = [x for x, _ in drawn]
        assert xs == sorted(xs)
    legend = texts(by_id(svg, "legend"))
    assert {"lr group 0", "lr group 1"} <= legend
    assert (svg.find(".//*[@id='momentum-group-0']") is not None) == ("momentum" in values)
    if type_name in METRIC_DRIVEN:
        monitored = {"ReduceLROnPlateau": "val_loss", "hf:reduce_lr_on_plateau": "eval_loss"}.get(
            type_name, "loss"
        )
        assert len(vertices(by_id(svg, f"metric-{monitored}"))) == PREVIEW_STEPS


def test_one_cycle_draws_momentum_per_group_in_its_own_panel(
    preview_client: httpx.Client,
) -> None:
    svg = svg_of(preview_client.post("/v1/preview/chart.svg", json=preview_body("OneCycleLR")))
    momentum_axes = by_id(svg, "momentum-axes")
    for group in range(len(SGD)):
        line = momentum_axes.find(f".//*[@id='momentum-group-{group}']")
        assert line is not None
        assert len(vertices(line)) == 2 * (PREVIEW_STEPS + 1) - 1
    assert "momentum group 0" in texts(momentum_axes)


def test_a_preview_chart_marks_the_schedules_own_events(preview_client: httpx.Client) -> None:
    svg = svg_of(
        preview_client.post(
            "/v1/preview/chart.svg", json=preview_body("CosineAnnealingWarmRestarts")
        )
    )
    restarts = [element.attrib["id"] for element in svg.iter() if "id" in element.attrib]
    assert [gid for gid in restarts if gid.startswith("event-")] == [
        "event-warm_restart-4",
        "event-warm_restart-8",
        "event-warm_restart-12",
    ]
    assert "warm_restart" in texts(by_id(svg, "legend"))


def test_a_long_preview_is_thinned_to_a_bounded_number_of_points(
    preview_client: httpx.Client,
) -> None:
    steps = 30_000
    body = {
        "scheduler": EXAMPLES["CosineAnnealingWarmRestarts"],
        "param_groups": [{"lr": 0.1}],
        "steps": steps,
    }
    drawn = vertices(
        by_id(svg_of(preview_client.post("/v1/preview/chart.svg", json=body)), "lr-group-0")
    )
    assert len(drawn) <= 2 * MAX_POINTS_DRAWN
    assert len(drawn) > MAX_POINTS_DRAWN // 4


def test_thinning_keeps_a_one_step_spike_and_dip_that_every_nth_sampling_would_lose() -> None:
    values = [1.0] * 100_000
    values[31_337], values[77_777] = 50.0, -3.0
    kept = keep_extremes(list(range(len(values))), [values], max_points=400)
    assert len(kept) <= 400
    assert {0, 31_337, 77_777, len(values) - 1} <= set(kept)


def test_a_preview_chart_over_the_preview_limits_is_a_422_naming_steps(
    preview_client: httpx.Client,
) -> None:
    body = {**preview_body("StepLR"), "steps": 10**9}
    answer = preview_client.post("/v1/preview/chart.png", json=body)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert answer.json()["errors"][0]["loc"] == ["body", "steps"]


def test_a_plateau_reduction_is_marked_at_its_step_and_drawn_as_a_vertical_drop(
    client: httpx.Client,
) -> None:
    plateau = {"type": "ReduceLROnPlateau", "params": {"patience": 0}, "monitor": "loss"}
    run_id = new_run(client, plateau, [{"lr": 0.1}])
    reductions = [step for step in range(1, 6) if report(client, run_id, step, loss=1.0)["events"]]
    assert reductions  # patience 0 and a loss that never improves
    svg = svg_of(client.get(f"/v1/runs/{run_id}/chart.svg"))

    marker = vertices(by_id(svg, f"event-plateau_reduction-{reductions[0]}"))
    marker_x = marker[0][0]
    assert all(x == marker_x for x, _ in marker)
    lr_line = vertices(by_id(svg, "lr-group-0"))
    drops = [
        (before, after)
        for before, after in itertools.pairwise(lr_line)
        if before[0] == after[0] == marker_x and before[1] != after[1]
    ]
    assert len(drops) == 1
    (_, top), (_, bottom) = drops[0]
    assert bottom > top  # SVG's y grows downwards: the lr fell
    assert "plateau_reduction" in texts(by_id(svg, "legend"))


def test_the_monitored_metric_and_metrics_asked_for_share_a_second_axis(
    client: httpx.Client,
) -> None:
    plateau = {"type": "ReduceLROnPlateau", "params": {"patience": 2}, "monitor": "loss"}
    run_id = new_run(client, plateau, [{"lr": 0.1}, {"lr": 0.01}])
    for step in range(1, 5):
        report(client, run_id, step, loss=1.0 / step, accuracy=0.2 * step)

    svg = svg_of(client.get(f"/v1/runs/{run_id}/chart.svg", params={"metrics": "accuracy"}))
    metric_axes = by_id(svg, "metric-axes")
    for name in ("loss", "accuracy"):
        line = metric_axes.find(f".//*[@id='metric-{name}']")
        assert line is not None, name
        assert len(vertices(line)) == 4  # steps 1-4 reported it; step 0 did not
    assert by_id(svg, "lr-axes").find(".//*[@id='metric-loss']") is None
    assert {"loss", "accuracy", "lr group 0", "lr group 1"} <= texts(by_id(svg, "legend"))

    unasked = svg_of(client.get(f"/v1/runs/{run_id}/chart.svg"))
    assert unasked.find(".//*[@id='metric-accuracy']") is None
    assert unasked.find(".//*[@id='metric-loss']") is not None


def test_history_superseded_by_a_rewind_is_drawn_faded(client: httpx.Client) -> None:
    run_id = new_run(client, {"type": "ExponentialLR", "params": {"gamma": 0.5}}, [{"lr": 1.0}])
    for step in range(1, 7):
        report(client, run_id, step)
    assert client.post(f"/v1/runs/{run_id}/rewind", json={"step": 3}).status_code == 200

    svg = svg_of(client.get(f"/v1/runs/{run_id}/chart.svg"))
    current = by_id(svg, "lr-group-0")
    faded = by_id(svg, "superseded-0-group-0")
    assert len(vertices(current)) == 2 * 4 - 1  # steps 0-3
    assert len(vertices(faded)) == 2 * 4 - 1  # step 3, where it branched, and steps 4-6
    (faded_path,) = faded.iter(f"{SVG}path")
    assert "stroke-opacity: 0.35" in faded_path.attrib["style"]
    (current_path,) = current.iter(f"{SVG}path")
    assert "stroke-opacity" not in current_path.attrib["style"]
    assert by_id(svg, "event-rewind-3") is not None
    assert "superseded history" in texts(by_id(svg, "legend"))


def test_a_log_scale_draws_equal_ratios_as_equal_drops(client: httpx.Client) -> None:
    run_id = new_run(client, {"type": "ExponentialLR", "params": {"gamma": 0.1}}, [{"lr": 1.0}])
    for step in range(1, 5):
        report(client, run_id, step)

    def drops(scale: str) -> list[float]:
        svg = svg_of(client.get(f"/v1/runs/{run_id}/chart.svg", params={"scale": scale}))
        drawn = vertices(by_id(svg, "lr-group-0"))
        return [
            after[1] - before[1]
            for before, after in itertools.pairwise(drawn)
            if before[0] == after[0]
        ]

    log_drops, linear_drops = drops("log"), drops("linear")
    assert len(log_drops) == len(linear_drops) == 4
    assert max(log_drops) - min(log_drops) < 0.01
    assert linear_drops[0] > 5 * linear_drops[1]


def test_a_run_at_step_zero_draws_its_one_point(client: httpx.Client) -> None:
    run_id = new_run(client, EXAMPLES["CosineAnnealingLR"], [{"lr": 0.1}])
    svg = svg_of(client.get(f"/v1/runs/{run_id}/chart.svg"))
    line = by_id(svg, "lr-group-0")
    assert len(list(line.iter(f"{SVG}use"))) == 1  # a marker where the one point is
    assert "lr group 0" in texts(by_id(svg, "legend"))


def test_start_and_end_bound_the_steps_drawn(client: httpx.Client) -> None:
    run_id = new_run(client, EXAMPLES["CosineAnnealingLR"], SGD)
    report(client, run_id, 10)  # catches up, recording steps 1-10
    svg = svg_of(client.get(f"/v1/runs/{run_id}/chart.svg", params={"start": 2, "end": 6}))
    assert len(vertices(by_id(svg, "lr-group-1"))) == 2 * 5 - 1


def test_the_chart_as_png_decodes_to_a_picture_that_is_not_blank(client: httpx.Client) -> None:
    run_id = new_run(client, EXAMPLES["StepLR"], SGD)
    report(client, run_id, 9)
    answer = client.get(f"/v1/runs/{run_id}/chart.png")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/png"
    assert answer.headers["cache-control"] == "private, no-cache"
    assert answer.content[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", answer.content[16:24])
    image = Image.open(io.BytesIO(answer.content)).convert("L")
    assert image.size == (width, height)
    assert statistics.pvariance(image.tobytes()) > 100


def test_a_preview_chart_as_png_decodes(preview_client: httpx.Client) -> None:
    answer = preview_client.post("/v1/preview/chart.png", json=preview_body("OneCycleLR"))
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(answer.content)).convert("L")
    assert statistics.pvariance(image.tobytes()) > 100


def test_the_same_chart_is_the_same_bytes(preview_client: httpx.Client) -> None:
    first = preview_client.post("/v1/preview/chart.svg", json=preview_body("CyclicLR"))
    second = preview_client.post("/v1/preview/chart.svg", json=preview_body("CyclicLR"))
    assert first.content == second.content


@pytest.mark.parametrize("image", ["chart.svg", "chart.png"])
def test_the_chart_of_an_unknown_run_is_a_404_problem(client: httpx.Client, image: str) -> None:
    answer = client.get(f"/v1/runs/no-such-chart-run/{image}")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == PROBLEM_MEDIA_TYPE


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"scale": "sideways"}, "scale"),
        ({"start": "-1"}, "start"),
        ({"end": "x"}, "end"),
        ({"start": "5", "end": "2"}, "end"),
        ({"metrics": "loss,,acc"}, "metrics"),
        ({"metrics": "never_reported"}, "metrics"),
        ({"metrics": ",".join(f"m{index}" for index in range(9))}, "metrics"),
    ],
)
def test_a_refused_chart_query_is_a_422_naming_the_field(
    client: httpx.Client, params: dict[str, str], field: str
) -> None:
    run_id = new_run(client, EXAMPLES["StepLR"], SGD)
    report(client, run_id, 1, loss=0.5)
    answer = client.get(f"/v1/runs/{run_id}/chart.svg", params=params)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert answer.json()["errors"][0]["loc"] == ["query", field]


def test_values_too_large_for_an_axis_are_left_out_not_a_500(
    preview_client: httpx.Client,
) -> None:
    body = {
        "scheduler": {"type": "ReduceLROnPlateau", "params": {"patience": 0}},
        "param_groups": [{"lr": 1.7976931348623157e308}, {"lr": 1e-300}],
        "steps": 3,
        "metrics": [1e308, -1e308, 1e308],
    }
    for image in ("chart.svg", "chart.png"):
        answer = preview_client.post(f"/v1/preview/{image}", json=body)
        assert answer.status_code == 200, answer.text


# -- a range test's suggestion chart --------------------------------------------------------

RANGE_TEST_STEPS = 40


def range_test_run(client: httpx.Client, steps: int = RANGE_TEST_STEPS) -> tuple[str, list[float]]:
    """A range test from 1e-4 to 1 whose loss falls until lr 0.1 and then blows up; the
    lrs the steps' batches trained with."""
    scheduler = {
        "type": "LRRangeTest",
        "params": {"start_lr": 1e-4, "end_lr": 1.0, "num_steps": RANGE_TEST_STEPS},
    }
    run_id = new_run(client, scheduler, [{"lr": 0.1}])
    lr, measured = 1e-4, []
    for step in range(1, steps + 1):
        measured.append(lr)
        loss = 1.0 - 0.2 * math.log10(lr) if lr < 0.1 else 1.2 + (lr - 0.1) * 100
        lr = report(client, run_id, step, loss=loss)["lr"][0]
    return run_id, measured


def test_the_suggestion_chart_draws_the_curve_and_marks_each_method_at_its_lr(
    client: httpx.Client,
) -> None:
    run_id, measured = range_test_run(client)
    suggestion = client.get(f"/v1/runs/{run_id}/lr-suggestion").json()
    svg = svg_of(
        client.get(f"/v1/runs/{run_id}/lr-suggestion/chart.svg", params={"method": "valley"})
    )
    curve = vertices(by_id(svg, "loss-curve"))
    lowest = measured.index(suggestion["max_lr"])
    # The axis ends a little above the loss before its minimum: the blow-up is cut off.
    assert lowest < len(curve) < RANGE_TEST_STEPS
    for method in ("steepest", "valley"):
        (top, bottom) = vertices(by_id(svg, f"suggestion-{method}"))
        assert top[0] == bottom[0]  # a vertical line, at the curve point of its lr
        assert top[0] == curve[measured.index(suggestion["suggestions"][method])][0]
    # The minimum's lr / 10 is a decade left of it: 10 of the sweep's 40 steps over 4 decades.
    (top, _) = vertices(by_id(svg, "suggestion-minimum"))
    assert top[0] == pytest.approx(curve[lowest - 10][0], abs=0.01)
    legend = [text for text in texts(by_id(svg, "legend")) if ":" in text]
    assert any(text.startswith("valley: ") and text.endswith("(chosen)") for text in legend)
    assert not any(text.startswith("steepest") and "chosen" in text for text in legend)


def test_the_suggestion_chart_as_png_decodes(client: httpx.Client) -> None:
    run_id, _ = range_test_run(client, steps=12)
    answer = client.get(f"/v1/runs/{run_id}/lr-suggestion/chart.png")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(answer.content)).convert("L")
    assert statistics.pvariance(image.tobytes()) > 100


@pytest.mark.parametrize("image", ["svg", "png"])
def test_the_suggestion_chart_refuses_what_the_suggestion_refuses(
    client: httpx.Client, image: str
) -> None:
    early, _ = range_test_run(client, steps=5)
    answer = client.get(f"/v1/runs/{early}/lr-suggestion/chart.{image}")
    assert answer.status_code == 409
    assert answer.headers["content-type"] == PROBLEM_MEDIA_TYPE
    cosine = new_run(client, EXAMPLES["CosineAnnealingLR"], SGD)
    refused = client.get(f"/v1/runs/{cosine}/lr-suggestion/chart.{image}")
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"] == ["path", "run_id"]
    unknown = client.get(f"/v1/runs/{early}/lr-suggestion/chart.{image}", params={"method": "x"})
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["loc"] == ["query", "method"]
