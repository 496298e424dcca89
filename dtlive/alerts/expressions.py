"""The predicate language of alert rules (``when``): a small, safe expression language over an alert's fields.

Predicates are parsed with :mod:`ast` and interpreted by this module (nothing is ever ``eval``-ed):
comparisons ``< <= > >= == !=`` (chains like ``0.01 < p_value < 0.1`` too),
``in [...]`` / ``not in [...]`` (or ``in`` a list / dict / string field), ``and``, ``or``, ``not``, parentheses,
string / number / ``true`` / ``false`` literals, and field names: ``id``, ``record_number``, ``mission``,
``instrument``, ``topic``, ``type``, ``tense``, ``format``, ``trigger_time``, ``alert_time``, ``is_test``,
``is_retraction``, ``localisation`` and every key of ``extra`` under its own name (``p_value``, ``far_hz``,
``signalness``, ``significant`` ...); ``a.b`` or ``a["b"]`` looks into a dict (``classification.GRB``,
``localisation.error_deg``). A bare field is a condition that holds when the field is present and truthy.
A comparison with a missing field, or between values of different kinds (a string and a number), is false,
never an error: ``p_value < 0.1`` and ``p_value >= 0.1`` are both false when there is no p-value (so
``not p_value < 0.1`` is true then). Strings compare case-sensitively; ``true`` only equals ``true``, not ``1``.
Anything else (arithmetic, calls, ``None``, assignments ...) is refused with a :class:`ValueError` when the
rules are loaded (naming the rule).

>>> Predicate("0.01 < p_value < 0.1 and not is_test")({"p_value": 0.05, "is_test": False})
True
"""

from __future__ import annotations

import ast
import math
import numbers
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from dtlive.alerts.notices import Alert

__all__ = ["MAX_EXPRESSION_DEPTH", "MAX_EXPRESSION_LENGTH", "Predicate", "alert_fields"]

#: longest predicate text accepted (keeps the parser far from its recursion limits)
MAX_EXPRESSION_LENGTH = 2000
#: deepest nesting of a predicate (operators inside operators)
MAX_EXPRESSION_DEPTH = 40
_CORE_FIELDS = ("id", "record_number", "mission", "instrument", "topic", "type", "tense", "format",
                "trigger_time", "alert_time", "localisation")


class _Missing:
    """The value of a field the alert does not have."""

    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def alert_fields(alert: Alert) -> dict[str, Any]:
    """The names a predicate can use for ``alert``: the core fields, ``is_test`` / ``is_retraction``,
    ``extra`` (as a dict) and every ``extra`` key under its own name (core fields win a clash).

    >>> from dtlive.alerts import parse_notice
    >>> f = alert_fields(parse_notice('{"mission": "KM3NeT", "id": "1", "far": 8e-8}', "gcn.notices.km3net.alert"))
    >>> f["mission"], f["far_hz"], f["is_test"], f["topic"]
    ('KM3NeT', 8e-08, False, 'gcn.notices.km3net.alert')
    """
    extra = alert.extra if isinstance(alert.extra, Mapping) else {}
    out: dict[str, Any] = {str(k): v for k, v in extra.items()}
    out.update({name: getattr(alert, name) for name in _CORE_FIELDS})
    out.update(is_test=alert.is_test, is_retraction=alert.is_retraction, extra=extra)
    return out


def _is_num(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _scalar_kind(v: Any) -> str | None:
    if isinstance(v, bool):
        return "bool"
    if _is_num(v):
        return "num"
    if isinstance(v, str):
        return "str"
    return None


def _equal(a: Any, b: Any) -> bool:
    kind = _scalar_kind(a)
    return kind is not None and kind == _scalar_kind(b) and bool(a == b)


def _ordered(op: str, a: Any, b: Any) -> bool:
    kind = _scalar_kind(a)
    if kind not in ("num", "str") or kind != _scalar_kind(b):
        return False
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _contains(container: Any, item: Any) -> bool | None:
    """``item in container`` by this language's equality; None when ``container`` cannot hold ``item``."""
    if isinstance(container, list | tuple):
        return any(_equal(item, x) for x in container)
    if isinstance(container, Mapping | str) and isinstance(item, str):  # a dict's keys / a substring
        return item in container
    return None  # a kind mismatch: neither "in" nor "not in" holds


def _compare(op: str, a: Any, b: Any) -> bool:
    if a is _MISSING or b is _MISSING:
        return False
    if op == "==":
        return _equal(a, b)
    if op == "!=":
        return not _equal(a, b)
    if op in ("in", "not in"):
        found = _contains(b, a)
        if found is None:
            return False
        return found if op == "in" else not found
    return _ordered(op, a, b)


def _truthy(v: Any) -> bool:
    if v is _MISSING:
        return False
    if isinstance(v, bool):
        return v
    if _is_num(v):
        return v != 0 and not (isinstance(v, float) and math.isnan(v))
    if isinstance(v, str | list | tuple | Mapping):
        return len(v) > 0
    return False


@dataclass(frozen=True)
class _Lit:
    value: Any

    def value_in(self, fields: Mapping[str, Any]) -> Any:
        return self.value

    def test(self, fields: Mapping[str, Any]) -> bool:
        return _truthy(self.value)


@dataclass(frozen=True)
class _Field:
    path: tuple[str | int, ...]

    def value_in(self, fields: Mapping[str, Any]) -> Any:
        value: Any = fields
        for key in self.path:
            in_dict = isinstance(value, Mapping) and isinstance(key, str) and key in value
            in_list = isinstance(value, list | tuple) and isinstance(key, int) and -len(value) <= key < len(value)
            if not (in_dict or in_list):
                return _MISSING
            value = value[key]
        return value

    def test(self, fields: Mapping[str, Any]) -> bool:
        return _truthy(self.value_in(fields))


@dataclass(frozen=True)
class _Compare:
    operands: tuple[Any, ...]  # _Lit / _Field
    ops: tuple[str, ...]

    def test(self, fields: Mapping[str, Any]) -> bool:
        values = [o.value_in(fields) for o in self.operands]
        return all(_compare(op, values[i], values[i + 1]) for i, op in enumerate(self.ops))


@dataclass(frozen=True)
class _BoolOp:
    kind: str  # "and" / "or"
    items: tuple[Any, ...]

    def test(self, fields: Mapping[str, Any]) -> bool:
        if self.kind == "and":
            return all(item.test(fields) for item in self.items)
        return any(item.test(fields) for item in self.items)


@dataclass(frozen=True)
class _Not:
    item: Any

    def test(self, fields: Mapping[str, Any]) -> bool:
        return not self.item.test(fields)


_CMP_OPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
            ast.In: "in", ast.NotIn: "not in"}
_WORD_LITERALS = {"true": True, "false": False}
_REFUSED = {  # what the user wrote -> why it is refused
    ast.Call: "function calls are not allowed", ast.BinOp: "arithmetic is not allowed",
    ast.Lambda: "lambda is not allowed", ast.IfExp: "'x if c else y' is not allowed",
    ast.NamedExpr: "':=' is not allowed", ast.Dict: "dict literals are not allowed",
    ast.ListComp: "comprehensions are not allowed", ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed", ast.GeneratorExp: "comprehensions are not allowed",
    ast.JoinedStr: "f-strings are not allowed", ast.Await: "await is not allowed",
    ast.Starred: "'*' is not allowed", ast.Slice: "slices are not allowed",
}


def _why(node: ast.AST) -> str:
    for kind, why in _REFUSED.items():
        if isinstance(node, kind):
            return why
    if isinstance(node, ast.Compare):
        return "a comparison cannot be compared again (use and / or)"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
        return "'~' is not allowed (use not)"
    if isinstance(node, ast.Constant):
        return f"{type(node.value).__name__} literal {node.value!r} is not allowed"
    return f"{type(node).__name__} is not allowed"


class Predicate:
    """A compiled ``when`` expression; calling it with an :class:`Alert` (or a mapping of field values) says
    whether the alert satisfies it. Compiling raises :class:`ValueError` for anything outside the language;
    calling never raises.

    >>> p = Predicate("p_value < 0.1 and mission in ['IceCube', 'KM3NeT']")
    >>> p({"p_value": 0.05, "mission": "IceCube"}), p({"p_value": 0.5, "mission": "IceCube"}), p({})
    (True, False, False)
    >>> Predicate("classification.GRB >= 0.5")({"classification": {"GRB": 0.9}})
    True
    >>> Predicate("__import__('os').system('true')")
    Traceback (most recent call last):
    ...
    ValueError: invalid expression "__import__('os').system('true')": function calls are not allowed
    """

    def __init__(self, text: str):
        if not isinstance(text, str):
            raise ValueError(f"expression must be a string, not {type(text).__name__}")
        self.text = text
        shown = repr(text if len(text) <= 80 else text[:77] + "...")
        if not text.strip():
            raise ValueError("empty expression")
        if len(text) > MAX_EXPRESSION_LENGTH:
            raise ValueError(f"expression longer than {MAX_EXPRESSION_LENGTH} characters")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # multi-line TOML strings: line breaks are plain spaces here
                tree = ast.parse(" ".join(text.splitlines()).strip(), mode="eval")
        except SyntaxError as e:
            raise ValueError(f"invalid expression {shown}: syntax error ({e.msg}"
                             f"{f' at column {e.offset}' if e.offset else ''})") from None
        except (RecursionError, MemoryError):
            raise ValueError(f"invalid expression {shown}: too complex to parse") from None
        except (ValueError, OverflowError) as e:
            raise ValueError(f"invalid expression {shown}: {type(e).__name__} ({e})") from None
        self.fields: frozenset[str] = frozenset()
        names: set[str] = set()
        try:
            self._root = self._condition(tree.body, 0, names)
        except RecursionError:
            raise ValueError(f"invalid expression {shown}: nested too deeply") from None
        except ValueError as e:
            raise ValueError(f"invalid expression {shown}: {e}") from None
        self.fields = frozenset(names)  # the top-level field names the expression reads

    # -- compiling: ast -> our own small node classes (a whitelist; anything unknown is refused)

    def _condition(self, node: ast.AST, depth: int, names: set[str]) -> Any:
        if depth > MAX_EXPRESSION_DEPTH:
            raise ValueError(f"nested deeper than {MAX_EXPRESSION_DEPTH}")
        if isinstance(node, ast.BoolOp):
            kind = "and" if isinstance(node.op, ast.And) else "or"
            return _BoolOp(kind, tuple(self._condition(v, depth + 1, names) for v in node.values))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return _Not(self._condition(node.operand, depth + 1, names))
        if isinstance(node, ast.Compare):
            ops = []
            for op in node.ops:
                if type(op) not in _CMP_OPS:
                    raise ValueError(f"operator {type(op).__name__} is not allowed (use < <= > >= == != in)")
                ops.append(_CMP_OPS[type(op)])
            operands = [self._operand(node.left, depth + 1, names, allow_list=False)]
            for i, right in enumerate(node.comparators):
                operands.append(self._operand(right, depth + 1, names, allow_list=ops[i] in ("in", "not in")))
            return _Compare(tuple(operands), tuple(ops))
        if isinstance(node, ast.Name | ast.Attribute | ast.Subscript):
            return self._operand(node, depth + 1, names, allow_list=False)
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            return _Lit(node.value)
        if isinstance(node, ast.Constant):
            raise ValueError(f"{repr(node.value)[:40]} is a value, not a condition")
        if isinstance(node, ast.UnaryOp):
            raise ValueError("a signed value is not a condition" if isinstance(node.op, ast.USub | ast.UAdd)
                             else _why(node))
        raise ValueError(_why(node))

    def _operand(self, node: ast.AST, depth: int, names: set[str], allow_list: bool) -> Any:
        if depth > MAX_EXPRESSION_DEPTH:
            raise ValueError(f"nested deeper than {MAX_EXPRESSION_DEPTH}")
        if isinstance(node, ast.Name) and node.id in _WORD_LITERALS:
            return _Lit(_WORD_LITERALS[node.id])
        if isinstance(node, ast.Constant | ast.UnaryOp):
            return _Lit(self._literal(node))
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            if not allow_list:
                raise ValueError("a list is only allowed after 'in' / 'not in'")
            if len(node.elts) > 1000:
                raise ValueError("list longer than 1000 items")
            return _Lit(tuple(self._literal(e) for e in node.elts))
        if isinstance(node, ast.Name | ast.Attribute | ast.Subscript):
            path: list[str | int] = []
            while not isinstance(node, ast.Name):
                if len(path) > MAX_EXPRESSION_DEPTH:
                    raise ValueError(f"field path deeper than {MAX_EXPRESSION_DEPTH}")
                if isinstance(node, ast.Attribute):
                    path.append(node.attr)
                    node = node.value
                elif isinstance(node, ast.Subscript):
                    key = node.slice
                    if not (isinstance(key, ast.Constant) and isinstance(key.value, str | int)
                            and not isinstance(key.value, bool)):
                        raise ValueError("only field[\"key\"] or field[number] subscripts are allowed")
                    path.append(key.value)
                    node = node.value
                else:
                    raise ValueError(f"{_why(node)} (only field names can be followed by . or [])")
            if node.id in _WORD_LITERALS:
                raise ValueError(f"{node.id} is a literal, not a field")
            path.append(node.id)
            names.add(node.id)
            return _Field(tuple(reversed(path)))
        raise ValueError(_why(node))

    @staticmethod
    def _literal(node: ast.AST) -> Any:
        if isinstance(node, ast.Name) and node.id in _WORD_LITERALS:
            return _WORD_LITERALS[node.id]
        sign = 1
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            sign = -1 if isinstance(node.op, ast.USub) else 1
            node = node.operand
            if not (isinstance(node, ast.Constant) and _is_num(node.value)):
                raise ValueError("a sign is only allowed in front of a number")
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, str | bool) or _is_num(value):
                return sign * value if _is_num(value) else value
            if value is None:
                raise ValueError("None is not allowed (a comparison with a missing field is simply false)")
            raise ValueError(_why(node))
        raise ValueError(f"{_why(node)} (a list holds only literals)" if not isinstance(node, ast.Name)
                         else f"list items must be literals, not the field {node.id!r}")

    # -- evaluating

    def evaluate(self, fields: Mapping[str, Any]) -> bool:
        """Evaluate on ``fields`` without the safety net of calling the predicate (which answers False where
        evaluating raises); with JSON-like values evaluation never raises.

        >>> Predicate("p_value < 0.01").evaluate({"p_value": 0.001})
        True
        """
        return bool(self._root.test(fields))

    def __call__(self, alert: Alert | Mapping[str, Any]) -> bool:
        fields = alert if isinstance(alert, Mapping) else alert_fields(alert)
        try:
            return self.evaluate(fields)
        except Exception:  # unreachable with JSON-like field values; odd user objects must not break matching
            return False

    def __repr__(self) -> str:
        return f"Predicate({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Predicate) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)
