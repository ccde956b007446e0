"""What service.json_body's depth check costs, beside ``json.loads`` of the same body.

    python -m bench.json_depth [--quick]

Every body is parsed anyway, so the parse is the baseline: the ratio says how much
the check adds to reading the body. Bodies: a step report (the hot path), a 1 MiB
body that is one metadata string (as large as a body may be, few brackets), and
1 MiB bodies dense with brackets, which take the scan's slow path (hostile; each
is refused later, as too deep or too large, but must not cost much before that).
Checks and parses are interleaved, the median of several rounds reported.
"""

import argparse
import json
import statistics
import timeit
from collections.abc import Callable

from service.json_body import nested_deeper_than

MIB = 1024 * 1024
MAX_DEPTH = 32


def bodies() -> dict[str, bytes]:
    step = json.dumps({"step": 1234, "metrics": {"loss": 0.4125, "val_loss": 0.5}}).encode()
    one_string = json.dumps({"metadata": {"notes": "x" * (MIB - 40)}}).encode()
    small_objects = json.dumps({"metadata": [{"a": [1, {"b": 2}]} for _ in range(45_000)]})
    deep_32 = ("[" * 32 + "]" * 32 + ",") * (MIB // 65)
    return {
        "step report": step,
        "1 MiB, one string": one_string,
        "1 MiB, 45k small objects": small_objects.encode(),
        "1 MiB, arrays 32 deep": f"[{deep_32[:-1]}]".encode(),
        "1 MiB of unclosed '['": b"[" * MIB,
    }


def per_call_us(function: Callable[[], object]) -> float:
    """µs per call, over as many calls as fill 0.2 s (timeit's autorange)."""
    calls, seconds = timeit.Timer(function).autorange()
    return seconds / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    arguments = parser.parse_args()
    rounds = 3 if arguments.quick else 7
    print(f"{'body':28} {'bytes':>9} {'check µs':>10} {'json.loads µs':>14} {'check/parse':>12}")
    for name, body in bodies().items():
        checks: list[float] = []
        parses: list[float] = []
        for _ in range(rounds):
            checks.append(per_call_us(lambda body=body: nested_deeper_than(body, MAX_DEPTH)))
            parses.append(per_call_us(lambda body=body: _parse_or_fail(body)))
        check, parse = statistics.median(checks), statistics.median(parses)
        print(f"{name:28} {len(body):>9} {check:>10.2f} {parse:>14.2f} {check / parse:>11.2f}x")


def _parse_or_fail(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as error:
        return error


if __name__ == "__main__":
    main()
