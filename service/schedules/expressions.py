"""Expression strings (``lr_lambda``, ``scale_fn``) compiled to callables, without ``eval``.

torch takes Python callables; a service can only take text. The text is parsed
with :mod:`ast`, checked against a whitelist, and turned once into nested
closures, so evaluating it on the hot path costs a few function calls and
nothing can reach Python's object model: there are no attributes, subscripts,
strings, lambdas or comprehensions to climb through, and the only names are the
one variable, a few math constants and a few math functions.

What is allowed::

    numbers (int, float)   the variable (``epoch`` or ``x``)   pi e tau inf
    + - * / // % **        unary - +   not   and   or   a if cond else b
    < <= > >= == != (chained)
    min(a, b, ...) max(a, b, ...) abs(a)
    cos sin tan exp sqrt log2 log10 floor ceil (one argument), log (one or two)
    each math name also as ``math.<name>``

Python's own int/float semantics hold (``epoch // 30`` stays an int, ``1 / 2``
is 0.5), with two refusals Python would not make, because both can only hurt a
service: an int power whose result would exceed :data:`MAX_INT_BITS` bits (Python
would compute ``9 ** 9 ** 9`` for minutes), and a power with a complex result
(``(-8) ** (1 / 3)``; ``math.pow`` refuses it too).

Errors: anything refused while compiling raises ``InvalidConfig(loc, message)``,
the message naming the construct; a failure while evaluating (division by zero,
overflow, math domain, the power guard) raises ``ExpressionError``. Constant
subexpressions are folded while compiling, so ``9 ** 9 ** 9`` is refused before
any step is taken; other arithmetic failures in constants (``1 / 0``) are left
to evaluation, because a branch that is never taken must not fail.
"""

import ast
import functools
import math
import operator
from collections.abc import Callable
from typing import Any

from service.schedules.errors import ExpressionError, InvalidConfig, Loc

Number = int | float
Evaluator = Callable[[Number], Number]

MAX_SOURCE_CHARS = 500
MAX_NODES = 200
MAX_DEPTH = 60
# An int power is refused when its result is sure to be longer than this. 10 000 bits
# (about 3 000 decimal digits) is far beyond any float (1 024 bits) yet costs microseconds.
MAX_INT_BITS = 10_000

# ``variable ** k`` with a literal int |k| <= this skips the guard (see _binary_closure).
SMALL_EXPONENT = 64

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf}


# name -> (function, smallest argument count, largest argument count or None for any)
FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int | None]] = {
    "min": (min, 2, None),
    "max": (max, 2, None),
    "abs": (abs, 1, 1),
    "cos": (math.cos, 1, 1),
    "sin": (math.sin, 1, 1),
    "tan": (math.tan, 1, 1),
    "exp": (math.exp, 1, 1),
    "sqrt": (math.sqrt, 1, 1),
    "log2": (math.log2, 1, 1),
    "log10": (math.log10, 1, 1),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "log": (math.log, 1, 2),
}
# Reachable only as ``math.<name>``, never as bare names: min, max, abs are builtins.
_MATH_NAMES = frozenset(CONSTANTS) | (frozenset(FUNCTIONS) - {"min", "max", "abs"})


class _TooLarge(ExpressionError):
    """The power guard's refusal: the only evaluation error a constant is refused for."""


def guarded_power(base: Number, exponent: Number) -> Number:
    """``base ** exponent``, refusing what would hang (huge int powers) or turn complex."""
    if (
        isinstance(exponent, int)
        and isinstance(base, int)
        and exponent > 0
        and (base > 1 or base < -1)
        and (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS
    ):
        raise _TooLarge(f"{base} ** {exponent} is too large (more than {MAX_INT_BITS} bits)")
    result = base**exponent
    if isinstance(result, complex):
        raise ExpressionError(f"{_power_text(base, exponent)} is not a real number")
    return result


def _power_text(base: Number, exponent: Number) -> str:
    return f"({base!r}) ** {exponent!r}" if base < 0 else f"{base!r} ** {exponent!r}"


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: guarded_power,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Not: operator.not_,
}
_SYMBOLS: dict[type[ast.AST], str] = {
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.MatMult: "@",
    ast.Invert: "~",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
}
# Errors a whitelisted expression can raise while evaluating; anything else is a bug here.
_EVALUATION_ERRORS = (ArithmeticError, ValueError)


class _Constant:
    """A compiled subexpression whose value is known while compiling."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _Variable:
    """The expression's one variable, kept apart so that operators can skip a call for it."""


_VARIABLE = _Variable()
# What compiling one node gives: a known value, the variable, or a closure of the variable.
_Compiled = _Constant | _Variable | Callable[[Number], Any]


def compile_expression(source: str, variable: str, loc: Loc) -> Evaluator:
    """Compile ``source``, an expression in ``variable``, into a callable of that variable.

    ``loc`` is where the string sits in the config; every compile-time refusal is
    ``InvalidConfig(loc, message)``. The callable raises ``ExpressionError``.

    A scheduler is rebuilt from its config on every step report, so compiled callables
    are kept (by source, variable and loc; refusals are not kept, they raise each time):
    they are pure functions of their argument, so sharing one is safe.
    """
    if not isinstance(source, str):
        raise InvalidConfig(loc, f"expected an expression string, got {type(source).__name__}")
    return _compile_cached(source, variable, loc)


# Bounded: sources come from clients. A few hundred distinct expressions cover any
# realistic set of live runs; beyond that the oldest are compiled again when used.
@functools.lru_cache(maxsize=512)
def _compile_cached(source: str, variable: str, loc: Loc) -> Evaluator:
    if len(source) > MAX_SOURCE_CHARS:
        raise InvalidConfig(
            loc, f"expression is {len(source)} characters long; at most {MAX_SOURCE_CHARS}"
        )
    tree = _parse(source, loc)
    node_count = sum(1 for _ in ast.walk(tree))
    if node_count > MAX_NODES:
        raise InvalidConfig(loc, f"expression has {node_count} parts; at most {MAX_NODES}")
    compiled = _Compiler(variable, loc).compile(tree.body, depth=0)
    return _finish(compiled, _parameter_name(loc))


def _parse(source: str, loc: Loc) -> ast.Expression:
    if not source.strip():
        raise InvalidConfig(loc, "expression is empty")
    try:
        return ast.parse(source.strip(), mode="eval")
    except SyntaxError as error:
        raise InvalidConfig(loc, f"not a valid expression: {error.msg}") from None
    except (ValueError, RecursionError, MemoryError):
        # Null bytes (ValueError), or nesting beyond what the parser itself handles.
        raise InvalidConfig(loc, "not a valid expression") from None


def _failure_reason(error: ArithmeticError | ValueError) -> str:
    """What went wrong, in words: ``division by zero``, ``overflow (Numerical result ...)``."""
    if isinstance(error, ZeroDivisionError):
        return "division by zero"
    if isinstance(error, OverflowError):
        detail = error.args[-1] if error.args else ""
        return f"overflow ({detail})" if detail else "overflow"
    return str(error) or type(error).__name__


def _parameter_name(loc: Loc) -> str:
    """``("params", "lr_lambda", 1)`` as a person writes it: ``lr_lambda[1]``."""
    names = [part for part in loc if part != "params"]
    text = ".".join(str(part) for part in names if isinstance(part, str))
    indexes = "".join(f"[{part}]" for part in names if isinstance(part, int))
    return text + indexes


def _finish(compiled: _Compiled, parameter: str) -> Evaluator:
    """The public callable: one try block around the whole tree, the cheapest place for it."""
    if isinstance(compiled, _Constant):
        value = compiled.value

        def constant(_: Number) -> Number:
            return value

        return constant
    body = _as_callable(compiled)

    def evaluate(value: Number) -> Number:
        try:
            return body(value)
        except _EVALUATION_ERRORS as error:
            raise ExpressionError(_failure_reason(error), parameter) from None
        except ExpressionError as error:
            raise ExpressionError(error.reason, parameter) from None

    return evaluate


class _Compiler:
    """One walk over a parsed expression: each node is checked, then turned into a closure."""

    def __init__(self, variable: str, loc: Loc) -> None:
        self.variable = variable
        self.loc = loc

    def refuse(self, message: str) -> InvalidConfig:
        return InvalidConfig(self.loc, message)

    def compile(self, node: ast.expr, depth: int) -> _Compiled:
        if depth > MAX_DEPTH:
            raise self.refuse(f"expression is nested more than {MAX_DEPTH} levels deep")
        depth += 1
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.BinOp):
            return self.binary(node, depth)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node, depth)
        if isinstance(node, ast.Compare):
            return self.compare(node, depth)
        if isinstance(node, ast.BoolOp):
            return self.boolean(node, depth)
        if isinstance(node, ast.IfExp):
            return self.conditional(node, depth)
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        if isinstance(node, ast.Attribute):
            return self.math_constant(node)
        raise self.refuse(f"{_describe(node)} is not allowed in an expression")

    # -- leaves ---------------------------------------------------------------
    def constant(self, node: ast.Constant) -> _Constant:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.refuse(f"only int and float literals are allowed, not {value!r}")
        return _Constant(value)

    def name(self, node: ast.Name) -> _Compiled:
        if node.id == self.variable:
            return _VARIABLE
        if node.id in CONSTANTS:
            return _Constant(CONSTANTS[node.id])
        if node.id in FUNCTIONS:
            raise self.refuse(f"{node.id!r} is a function: call it, e.g. {node.id}(...)")
        raise self.refuse(
            f"name {node.id!r} is not allowed; use {self.variable!r}, numbers, "
            f"{', '.join(CONSTANTS)} and the functions {', '.join(FUNCTIONS)}"
        )

    def math_name(self, node: ast.Attribute) -> str:
        """The ``<name>`` of ``math.<name>``, for an allowed name only."""
        if not (isinstance(node.value, ast.Name) and node.value.id == "math"):
            raise self.refuse(
                f"attribute access ({_unparse(node)}) is not allowed; only math.<name> "
                f"for the math functions and constants"
            )
        if node.attr not in _MATH_NAMES:
            raise self.refuse(
                f"math.{node.attr} is not allowed; allowed: "
                + ", ".join(f"math.{name}" for name in sorted(_MATH_NAMES))
            )
        return node.attr

    def math_constant(self, node: ast.Attribute) -> _Constant:
        attribute = self.math_name(node)
        if attribute not in CONSTANTS:
            raise self.refuse(
                f"math.{attribute} is a function: call it, e.g. math.{attribute}(...)"
            )
        return _Constant(CONSTANTS[attribute])

    # -- operators ------------------------------------------------------------
    def binary(self, node: ast.BinOp, depth: int) -> _Compiled:
        operation = _BINARY.get(type(node.op))
        if operation is None:
            raise self.refuse(f"operator {_SYMBOLS.get(type(node.op), '?')} is not allowed")
        left = self.compile(node.left, depth)
        right = self.compile(node.right, depth)
        return self.apply(operation, (left, right))

    def unary(self, node: ast.UnaryOp, depth: int) -> _Compiled:
        operation = _UNARY.get(type(node.op))
        if operation is None:
            raise self.refuse(f"operator {_SYMBOLS.get(type(node.op), '?')} is not allowed")
        return self.apply(operation, (self.compile(node.operand, depth),))

    def compare(self, node: ast.Compare, depth: int) -> _Compiled:
        operations = []
        for operator_node in node.ops:
            operation = _COMPARE.get(type(operator_node))
            if operation is None:
                symbol = _SYMBOLS.get(type(operator_node), "?")
                raise self.refuse(f"comparison {symbol!r} is not allowed")
            operations.append(operation)
        left = self.compile(node.left, depth)
        rights = [self.compile(comparator, depth) for comparator in node.comparators]
        if len(operations) == 1:
            return self.apply(operations[0], (left, rights[0]))
        items = [left, *rights]
        if all(isinstance(item, _Constant) for item in items):
            values = [item.value for item in items]  # type: ignore[union-attr]
            return _Constant(
                all(op(a, b) for op, a, b in zip(operations, values, values[1:], strict=False))
            )
        first = _as_callable(left)
        steps = [
            (operation, _as_callable(right))
            for operation, right in zip(operations, rights, strict=True)
        ]

        def chained(v: Number) -> bool:
            # Python's chain: each operand evaluated once, stopping at the first false link.
            current = first(v)
            for operation, right in steps:
                following = right(v)
                if not operation(current, following):
                    return False
                current = following
            return True

        return chained

    def boolean(self, node: ast.BoolOp, depth: int) -> _Compiled:
        operands = [_as_callable(self.compile(value, depth)) for value in node.values]
        if isinstance(node.op, ast.And):

            def conjunction(v: Number) -> Any:
                result: Any = True
                for operand in operands:
                    result = operand(v)
                    if not result:
                        return result
                return result

            return conjunction

        def disjunction(v: Number) -> Any:
            result: Any = False
            for operand in operands:
                result = operand(v)
                if result:
                    return result
            return result

        return disjunction

    def conditional(self, node: ast.IfExp, depth: int) -> _Compiled:
        condition = self.compile(node.test, depth)
        when_true = self.compile(node.body, depth)
        when_false = self.compile(node.orelse, depth)
        if isinstance(condition, _Constant):
            return when_true if condition.value else when_false
        test, body, orelse = (_as_callable(c) for c in (condition, when_true, when_false))

        def choose(v: Number) -> Any:
            return body(v) if test(v) else orelse(v)

        return choose

    def call(self, node: ast.Call, depth: int) -> _Compiled:
        if isinstance(node.func, ast.Name):
            name = node.func.id
            if name not in FUNCTIONS:
                raise self.refuse(
                    f"calling {name!r} is not allowed; allowed functions: {', '.join(FUNCTIONS)}"
                )
        elif isinstance(node.func, ast.Attribute):
            name = self.math_name(node.func)
            if name not in FUNCTIONS:
                raise self.refuse(f"math.{name} is a constant, not a function")
        else:
            raise self.refuse(f"only named functions can be called, not {_describe(node.func)}")
        if node.keywords:
            raise self.refuse(f"keyword arguments are not allowed (in the call of {name})")
        if any(isinstance(argument, ast.Starred) for argument in node.args):
            raise self.refuse(f"starred arguments are not allowed (in the call of {name})")
        function, fewest, most = FUNCTIONS[name]
        count = len(node.args)
        if count < fewest or (most is not None and count > most):
            if most is None:
                expected = f"{fewest} or more"
            elif fewest == most:
                expected = str(fewest)
            else:
                expected = f"{fewest} to {most}"
            raise self.refuse(f"{name}() takes {expected} arguments, got {count}")
        arguments = [self.compile(argument, depth) for argument in node.args]
        return self.apply(function, tuple(arguments))

    # -- building closures ----------------------------------------------------
    def apply(self, function: Callable[..., Any], operands: tuple[_Compiled, ...]) -> _Compiled:
        """``function(*operands)``: folded when all are known, else the cheapest closure shape."""
        if all(isinstance(operand, _Constant) for operand in operands):
            return self.fold(function, [operand.value for operand in operands])  # type: ignore[union-attr]
        if len(operands) == 1:
            return _unary_closure(function, operands[0])
        if len(operands) == 2:
            return _binary_closure(function, operands[0], operands[1])
        parts = [_as_callable(operand) for operand in operands]

        def many(v: Number) -> Any:
            return function(*[part(v) for part in parts])

        return many

    def fold(self, function: Callable[..., Any], values: list[Any]) -> _Compiled:
        try:
            return _Constant(function(*values))
        except _TooLarge as error:
            # The text itself asks for a giant number: refuse it now, not at some step.
            raise self.refuse(f"constant too large: {error}") from None
        except (*_EVALUATION_ERRORS, ExpressionError):
            # e.g. 1 / 0 in a branch that may never be taken: fail when (and if) evaluated.
            constant_values = values

            def deferred(_: Number) -> Any:
                return function(*constant_values)

            return deferred


def _as_callable(compiled: _Compiled) -> Callable[[Number], Any]:
    if isinstance(compiled, _Constant):
        value = compiled.value
        return lambda _: value
    if compiled is _VARIABLE:
        return lambda v: v
    return compiled  # type: ignore[return-value]


def _unary_closure(function: Callable[[Any], Any], operand: _Compiled) -> Callable[[Number], Any]:
    if operand is _VARIABLE:
        return function
    inner = _as_callable(operand)
    return lambda v: function(inner(v))


def _binary_closure(
    function: Callable[[Any, Any], Any], left: _Compiled, right: _Compiled
) -> Callable[[Number], Any]:
    """Shapes that skip a call where an operand is a constant or the variable itself."""
    if function is guarded_power and isinstance(left, _Constant) and _is_positive_float(left.value):
        # A positive float base can neither hang nor turn complex: plain ** is safe.
        function = operator.pow
    elif (
        function is guarded_power
        and left is _VARIABLE
        and isinstance(right, _Constant)
        and _is_small_int(right.value)
    ):
        # epoch ** 2: the result is at most a small multiple of the input's size, never complex.
        function = operator.pow
    if isinstance(left, _Constant):
        known = left.value
        if right is _VARIABLE:
            return lambda v: function(known, v)
        right_part = _as_callable(right)
        return lambda v: function(known, right_part(v))
    if isinstance(right, _Constant):
        known = right.value
        if left is _VARIABLE:
            return lambda v: function(v, known)
        left_part = _as_callable(left)
        return lambda v: function(left_part(v), known)
    if left is _VARIABLE:
        right_part = _as_callable(right)
        return lambda v: function(v, right_part(v))
    left_part = _as_callable(left)
    if right is _VARIABLE:
        return lambda v: function(left_part(v), v)
    right_part = _as_callable(right)
    return lambda v: function(left_part(v), right_part(v))


def _is_small_int(value: Any) -> bool:
    return isinstance(value, int) and -SMALL_EXPONENT <= value <= SMALL_EXPONENT


def _is_positive_float(value: Any) -> bool:
    return isinstance(value, float) and value > 0.0


def _describe(node: ast.AST) -> str:
    names = {
        ast.Subscript: "subscripting",
        ast.Lambda: "lambda",
        ast.ListComp: "a list comprehension",
        ast.SetComp: "a set comprehension",
        ast.DictComp: "a dict comprehension",
        ast.GeneratorExp: "a generator expression",
        ast.List: "a list",
        ast.Tuple: "a tuple",
        ast.Set: "a set",
        ast.Dict: "a dict",
        ast.JoinedStr: "an f-string",
        ast.NamedExpr: "the := operator",
        ast.Starred: "a starred expression",
        ast.Await: "await",
        ast.Yield: "yield",
        ast.YieldFrom: "yield",
        ast.Slice: "a slice",
        ast.Call: "a call",
        ast.Attribute: "attribute access",
    }
    return names.get(type(node), type(node).__name__)


def _unparse(node: ast.AST) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 40 else text[:37] + "..."
