"""The expression evaluator under random input: random text and random expression trees.

Whatever the source, compiling either refuses it with ``InvalidConfig`` or gives a
callable that returns a number or raises ``ExpressionError``; nothing else escapes.
What it accepts is held to the whitelist by an oracle of its own (a walk over
Python's AST, written apart from the compiler), so an accepted source can only
have used numbers, the variable, the math names and the allowed operators.
Each example is bounded in time (hypothesis' deadline, a generous 1 s: a bound on
runaway work, not a speed figure) and in memory (tracemalloc's peak).

The trees are built from ``ast`` nodes and unparsed, so every construct an
attacker could reach for appears: attributes and dunders, calls to names outside
the whitelist, lambdas, comprehensions, subscripts, f-strings, ``:=``, starred
arguments, strings, huge constants and towers of powers. A sample of the same
trees goes through the live server's ``POST /v1/preview``: never a 5xx.

Derandomized, with bounded example counts, so CI sees the same cases every run.
"""

import ast
import tracemalloc
from datetime import timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from service.schedules.errors import ExpressionError, InvalidConfig
from service.schedules.expressions import CONSTANTS, FUNCTIONS, compile_expression

# Parsing ``1 is 1`` warns; the warning says nothing about the evaluator.
pytestmark = pytest.mark.filterwarnings("ignore::SyntaxWarning")

LOC = ("params", "lr_lambda")
EPOCHS = (0, 1, 2, 7, 100, 10**6)
# Generous: a compile and six evaluations of at most 500 characters. A bound, not a speed.
DEADLINE = timedelta(seconds=1)
MEMORY_BOUND_BYTES = 16 * 1024 * 1024
FUZZ = settings(
    max_examples=400,
    derandomize=True,
    deadline=DEADLINE,
    suppress_health_check=[HealthCheck.too_slow],
)

ALLOWED_NODES = (
    ast.Expression,
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.BoolOp,
    ast.IfExp,
    ast.Call,
    ast.Attribute,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.FloorDiv,
    ast.Mod,
    ast.Pow,
    ast.USub,
    ast.UAdd,
    ast.Not,
    ast.And,
    ast.Or,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.Eq,
    ast.NotEq,
)
MATH_NAMES = set(CONSTANTS) | set(FUNCTIONS) - {"min", "max", "abs"}


def outside_the_whitelist(source: str, variable: str) -> list[str]:
    """The oracle: every construct in ``source`` that the documented whitelist does not allow."""
    tree = ast.parse(source.strip(), mode="eval")
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ALLOWED_NODES):
            found.append(type(node).__name__)
        elif isinstance(node, ast.Constant) and (
            isinstance(node.value, bool) or not isinstance(node.value, int | float)
        ):
            found.append(f"constant {node.value!r}")
        elif isinstance(node, ast.Name) and node.id not in {
            variable,
            "math",
            *CONSTANTS,
            *FUNCTIONS,
        }:
            found.append(f"name {node.id}")
        elif isinstance(node, ast.Attribute) and not (
            isinstance(node.value, ast.Name) and node.value.id == "math" and node.attr in MATH_NAMES
        ):
            found.append(f"attribute {node.attr}")
        elif isinstance(node, ast.Call) and (
            node.keywords or not isinstance(node.func, ast.Name | ast.Attribute)
        ):
            found.append("call shape")
    return found


def check_source(source: str, variable: str = "epoch") -> str:
    """Compile and evaluate ``source`` within the bounds; 'refused', 'failed' or 'number'."""
    tracemalloc.start()
    try:
        outcome = _compile_and_evaluate(source, variable)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND_BYTES, f"{source!r} used {peak} bytes"
    return outcome


def _compile_and_evaluate(source: str, variable: str) -> str:
    try:
        evaluate = compile_expression(source, variable, LOC)
    except InvalidConfig as refusal:
        assert refusal.loc == LOC
        return "refused"
    # Accepted: then only whitelisted constructs were used.
    assert outside_the_whitelist(source, variable) == [], source
    outcome = "number"
    for value in EPOCHS:
        try:
            result = evaluate(value if variable == "epoch" else value / 3)
        except ExpressionError:
            outcome = "failed"
            continue
        # bool is an int: a comparison's value, as Python gives it.
        assert isinstance(result, int | float), f"{source!r} gave {type(result).__name__}"
    return outcome


# -- random text ---------------------------------------------------------------------------

_EXPRESSION_CHARACTERS = st.sampled_from(
    [
        *"0123456789+-*/%().,<>=! _abcdefghijklmnopqrstuvwxyz'\"[]{}:@~^&|\\#\n\t\x00",
        *["epoch", "math.", "__", "import", "lambda", "for", "in", "if", "else", "**", "9**9**9"],
    ]
)


@FUZZ
@given(source=st.lists(_EXPRESSION_CHARACTERS, max_size=40).map("".join) | st.text(max_size=60))
@example(source="9**9**9**9")
@example(source="'a'*10**9")
@example(source="__import__('os')")
@example(source="().__class__.__bases__[0].__subclasses__()")
@example(source="epoch.__class__")
@example(source="(lambda: 1)()")
@example(source="[x for x in ()]")
@example(source="math.__dict__")
@example(source="open('x')")
@example(source="(y := 2)")
@example(source="f'{epoch}'")
@example(source="min(*[1, 2])")
@example(source="1" * 100_000)
@example(source="(" * 300 + "1" + ")" * 300)
@example(source="-" * 400 + "1")
@example(source="epoch" + " ** epoch" * 60)
def test_any_text_compiles_to_a_whitelisted_number_or_is_refused(source: str) -> None:
    check_source(source)


# -- random expression trees ----------------------------------------------------------------


def _name(identifier: str) -> ast.Name:
    return ast.Name(id=identifier, ctx=ast.Load())


def _call(function: ast.expr, arguments: list[ast.expr]) -> ast.Call:
    return ast.Call(func=function, args=arguments, keywords=[])


_NAMES = [
    "epoch", "x", "pi", "e", "tau", "inf", "math", "open", "eval", "exec", "__import__",
    "__builtins__", "globals", "getattr", "type", "object", "print", "self",
]  # fmt: skip
_FUNCTIONS = [*FUNCTIONS, "eval", "exec", "open", "__import__", "getattr", "pow", "int", "len"]
_ATTRIBUTES = ["pi", "cos", "log", "__dict__", "__class__", "__globals__", "__subclasses__", "real"]
_BINARY = [
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
    ast.LShift, ast.RShift, ast.BitAnd, ast.BitOr, ast.BitXor, ast.MatMult,
]  # fmt: skip
_UNARY = [ast.USub, ast.UAdd, ast.Not, ast.Invert]
_COMPARE = [ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq, ast.Is, ast.IsNot, ast.In]

_LEAVES: st.SearchStrategy[ast.expr] = st.one_of(
    st.integers(min_value=0, max_value=10**6).map(lambda value: ast.Constant(value)),
    st.floats(min_value=0, allow_nan=False).map(lambda value: ast.Constant(value)),
    st.sampled_from([10**400, 9**99, 2**64, 10**3000]).map(lambda value: ast.Constant(value)),
    st.sampled_from(["a", b"x", None, True, ..., 1j]).map(lambda value: ast.Constant(value)),
    st.sampled_from(_NAMES).map(_name),
    st.sampled_from(_ATTRIBUTES).map(
        lambda attribute: ast.Attribute(_name("math"), attribute, ast.Load())
    ),
)


def _branches(children: st.SearchStrategy[ast.expr]) -> st.SearchStrategy[ast.expr]:
    operands = st.lists(children, min_size=1, max_size=3)
    return st.one_of(
        st.builds(ast.BinOp, children, st.sampled_from(_BINARY).map(lambda op: op()), children),
        st.builds(ast.UnaryOp, st.sampled_from(_UNARY).map(lambda op: op()), children),
        st.builds(
            lambda left, ops, rights: ast.Compare(left, [op() for op in ops], rights[: len(ops)]),
            children,
            st.lists(st.sampled_from(_COMPARE), min_size=1, max_size=2),
            st.lists(children, min_size=2, max_size=2),
        ),
        st.builds(
            lambda op, values: ast.BoolOp(op(), values),
            st.sampled_from([ast.And, ast.Or]),
            st.lists(children, min_size=2, max_size=3),
        ),
        st.builds(ast.IfExp, children, children, children),
        st.builds(
            lambda name, args: _call(_name(name), args), st.sampled_from(_FUNCTIONS), operands
        ),
        st.builds(
            lambda name, args: _call(ast.Attribute(_name("math"), name, ast.Load()), args),
            st.sampled_from(_FUNCTIONS),
            operands,
        ),
        st.builds(
            lambda value, attribute: ast.Attribute(value, attribute, ast.Load()),
            children,
            st.sampled_from(_ATTRIBUTES),
        ),
        st.builds(lambda function, args: _call(function, args), children, operands),
        st.builds(
            lambda name, arg: ast.Call(_name(name), [arg], [ast.keyword("base", ast.Constant(2))]),
            st.sampled_from(["log", "min"]),
            children,
        ),
        st.builds(
            lambda name, arg: _call(_name(name), [ast.Starred(arg, ast.Load())]),
            st.sampled_from(["min", "max"]),
            children,
        ),
        st.builds(lambda value, index: ast.Subscript(value, index, ast.Load()), children, children),
        st.builds(
            lambda body: ast.Lambda(
                ast.arguments(
                    posonlyargs=[], args=[ast.arg("q")], kwonlyargs=[], kw_defaults=[], defaults=[]
                ),
                body,
            ),
            children,
        ),
        st.builds(
            lambda element, iterable: ast.ListComp(
                element, [ast.comprehension(ast.Name("q", ast.Store()), iterable, [], 0)]
            ),
            children,
            children,
        ),
        st.builds(
            lambda element, iterable: ast.GeneratorExp(
                element, [ast.comprehension(ast.Name("q", ast.Store()), iterable, [], 0)]
            ),
            children,
            children,
        ),
        st.builds(lambda value: ast.JoinedStr([ast.FormattedValue(value, -1, None)]), children),
        st.builds(lambda value: ast.NamedExpr(ast.Name("y", ast.Store()), value), children),
        st.builds(lambda items: ast.Tuple(items, ast.Load()), operands),
        st.builds(lambda items: ast.List(items, ast.Load()), operands),
        st.builds(lambda items: ast.Set(items), operands),
        st.builds(lambda key, value: ast.Dict([key], [value]), children, children),
    )


_ALLOWED_BINARY = [ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow]
_ALLOWED_COMPARE = [ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq]
_ONE_ARGUMENT = [name for name, (_, fewest, _most) in FUNCTIONS.items() if fewest == 1]
_WHITELISTED_LEAVES: st.SearchStrategy[ast.expr] = st.one_of(
    st.integers(min_value=0, max_value=100).map(lambda value: ast.Constant(value)),
    st.floats(min_value=0, max_value=1e3, allow_nan=False).map(lambda value: ast.Constant(value)),
    st.sampled_from(["epoch", "x", "pi", "e", "inf"]).map(_name),
)


def _whitelisted_branches(children: st.SearchStrategy[ast.expr]) -> st.SearchStrategy[ast.expr]:
    """Only what the whitelist allows: these reach evaluation, and its failures."""
    return st.one_of(
        st.builds(
            ast.BinOp, children, st.sampled_from(_ALLOWED_BINARY).map(lambda op: op()), children
        ),
        st.builds(
            ast.UnaryOp,
            st.sampled_from([ast.USub, ast.UAdd, ast.Not]).map(lambda op: op()),
            children,
        ),
        st.builds(
            lambda left, op, right: ast.Compare(left, [op()], [right]),
            children,
            st.sampled_from(_ALLOWED_COMPARE),
            children,
        ),
        st.builds(ast.IfExp, children, children, children),
        st.builds(
            lambda name, arg: _call(_name(name), [arg]), st.sampled_from(_ONE_ARGUMENT), children
        ),
        st.builds(
            lambda name, args: _call(_name(name), args),
            st.sampled_from(["min", "max", "log"]),
            st.lists(children, min_size=2, max_size=2),
        ),
    )


# Half whitelisted trees (to reach evaluation), half trees with anything in them.
EXPRESSION_TREES = st.one_of(
    st.recursive(_WHITELISTED_LEAVES, _whitelisted_branches, max_leaves=16),
    st.recursive(_LEAVES, _branches, max_leaves=24),
)


def tree_source(tree: ast.expr) -> str:
    return ast.unparse(ast.fix_missing_locations(tree))


@FUZZ
@given(tree=EXPRESSION_TREES, variable=st.sampled_from(["epoch", "x"]))
def test_any_expression_tree_compiles_to_a_whitelisted_number_or_is_refused(
    tree: ast.expr, variable: str
) -> None:
    check_source(tree_source(tree), variable)


def test_the_generated_trees_reach_refusals_evaluation_failures_and_numbers() -> None:
    # Not a test of the evaluator: of the generator, so that the fuzz above cannot pass
    # by only ever producing refusals (or only numbers).
    outcomes: set[str] = set()

    @settings(max_examples=300, derandomize=True, deadline=None)
    @given(tree=EXPRESSION_TREES)
    def collect(tree: ast.expr) -> None:
        outcomes.add(check_source(tree_source(tree)))

    collect()
    assert outcomes == {"refused", "failed", "number"}


def test_the_whitelist_oracle_catches_what_it_must() -> None:
    # The oracle is itself code: prove it can fail.
    assert outside_the_whitelist("epoch.__class__", "epoch") == ["attribute __class__"]
    assert outside_the_whitelist("open('x')", "epoch") == ["name open", "constant 'x'"]
    assert outside_the_whitelist("[q for q in ()]", "epoch") != []
    assert outside_the_whitelist("min(epoch, math.cos(pi)) ** 2", "epoch") == []


# -- through the service ----------------------------------------------------------------------


@settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(tree=EXPRESSION_TREES)
@example(tree=ast.parse("9**9**9**9", mode="eval").body)
@example(tree=ast.parse("().__class__", mode="eval").body)
@example(tree=ast.parse("10**3000 * 10**3000 * epoch", mode="eval").body)
def test_no_generated_expression_makes_the_service_answer_5xx(
    client: httpx.Client, tree: ast.expr
) -> None:
    source = tree_source(tree)
    body: dict[str, Any] = {
        "scheduler": {"type": "LambdaLR", "params": {"lr_lambda": source}},
        "param_groups": [{"lr": 0.1}],
        "steps": 20,
    }
    answer = client.post("/v1/preview", json=body)
    assert answer.status_code in (200, 422), (source, answer.status_code, answer.text[:300])
    if answer.status_code == 422:
        assert answer.headers["content-type"] == "application/problem+json"
        # A refusal names the expression's place, or the step it fails at.
        locations = [error["loc"] for error in answer.json()["errors"]]
        assert any("lr_lambda" in loc or "steps" in loc or "scheduler" in loc for loc in locations)
    else:
        assert all(len(row) == 1 for row in answer.json()["lr"])
