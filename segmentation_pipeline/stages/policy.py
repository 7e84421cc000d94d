"""Policy rules: the floors a customer's rating never goes below, read from a versioned rules file.

A rules file (TOML, ``policy_rules.toml`` by default) lists rules; each has an ``id``, a ``condition`` over the
canonical columns, a ``min_tier`` and a ``rationale``. :func:`load_policy` reads and checks the whole file before
anything runs: a bad file is refused with one line naming the file, the rule and the problem. The rules in force
travel with every model fitted under them (:meth:`Policy.to_dict`), so a rating is always explained by the rules
its model applied, and adding a rule is a change to the file, never to the code.

Conditions are a small, safe expression language (parsed with :mod:`ast`; nothing is ever executed):
comparisons ``== != < <= > >=`` (chains too), ``in [...]`` / ``not in [...]``, ``and`` / ``or`` / ``not``,
parentheses, ``+ - * /`` and unary minus, numbers, quoted text, ``True``/``False``. Names are canonical columns
(:data:`NUMERIC_COLUMNS`, :data:`TEXT_COLUMNS`). Text is compared ignoring case and surrounding spaces.

Unknown values follow SQL's three-valued logic: a comparison with an unknown value is unknown, ``unknown and
false`` is false, ``unknown or true`` is true, and a rule fires only when its condition is known to be true. A
blank flag means "not flagged" (0), as in the risk score.
"""

from __future__ import annotations

import ast
import hashlib
import json
import operator
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from segmentation_pipeline import schema
from segmentation_pipeline.config import default_rules_path
from segmentation_pipeline.stages.customers import CustomerBatch
from segmentation_pipeline.stages.tiering import INDICATORS, TIER_RANK, TIERS

NUMERIC_COLUMNS: Final[tuple[str, ...]] = tuple(dict.fromkeys((
    *INDICATORS, *schema.MONEY_COLUMNS, *schema.COUNT_COLUMNS, *schema.FLAG_COLUMNS, "age", "tenure_years",
)))  # fmt: skip
TEXT_COLUMNS: Final[tuple[str, ...]] = schema.CATEGORICAL_COLUMNS
FLOOR_TIERS: Final[tuple[str, ...]] = ("High", "Medium")  # a Low floor would never raise anyone
_RULE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_MAX_CONDITION = 1000


class PolicyError(ValueError):
    """A rules file that cannot be used: one line naming the file, the rule and the problem."""


# --- the condition language -----------------------------------------------------------------------------------


class _Invalid(Exception):
    """A problem in one condition (turned into a PolicyError naming the rule)."""


@dataclass(frozen=True)
class _Truth:
    """A condition's value per customer under three-valued logic: ``value`` is meaningful where ``known``."""

    value: np.ndarray
    known: np.ndarray


_COMPARISONS: Final[dict[type, Callable[[Any, Any], Any]]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}  # fmt: skip
_ARITHMETIC: Final[dict[type, Callable[[Any, Any], Any]]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
}  # fmt: skip
_SYMBOLS: Final[dict[type, str]] = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.In: "in",
    ast.NotIn: "not in",
}  # fmt: skip

# A compiled expression: customers' columns -> value. Kinds: "number" (float array, NaN unknown), "text" (object
# array, None unknown), "truth" (_Truth). Literals are scalars of their kind.
_Columns = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class _Expr:
    kind: str  # "number" | "text" | "truth" | "list"
    evaluate: Callable[[_Columns, int], Any]
    names: frozenset[str] = frozenset()


def _compile(node: ast.AST) -> _Expr:
    """Type-check and compile one node of a condition."""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            return _Expr("number", lambda _c, _n, v=float(value): v)
        if isinstance(value, int | float):
            return _Expr("number", lambda _c, _n, v=float(value): v)
        if isinstance(value, str):
            folded = _fold(value)
            return _Expr("text", lambda _c, _n: folded)
        raise _Invalid(f"{value!r} is not a number or quoted text")
    if isinstance(node, ast.Name):
        name = node.id
        if name in ("true", "false"):
            return _Expr("number", lambda _c, _n, v=float(name == "true"): v)
        if name in NUMERIC_COLUMNS:
            return _Expr("number", lambda c, n, key=name: c[key] if key in c else np.full(n, np.nan),
                         frozenset((name,)))  # fmt: skip
        if name in TEXT_COLUMNS:
            return _Expr("text", lambda c, n, key=name: c[key] if key in c else np.full(n, None, dtype=object),
                         frozenset((name,)))  # fmt: skip
        raise _Invalid(f"unknown column {name!r} (known: {', '.join((*NUMERIC_COLUMNS, *TEXT_COLUMNS))})")
    if isinstance(node, ast.UnaryOp):
        operand = _compile(node.operand)
        if isinstance(node.op, ast.Not):
            inner = _as_truth(operand)
            return _Expr("truth", lambda c, n: _not(inner.evaluate(c, n)), inner.names)
        if isinstance(node.op, ast.USub | ast.UAdd):
            _expect(operand, "number", "a sign")
            sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
            return _Expr("number", lambda c, n: sign * operand.evaluate(c, n), operand.names)
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right, function = _compile(node.left), _compile(node.right), _ARITHMETIC[type(node.op)]
        _expect(left, "number", "arithmetic")
        _expect(right, "number", "arithmetic")
        return _Expr("number", lambda c, n: _arithmetic(function, left.evaluate(c, n), right.evaluate(c, n)),
                     left.names | right.names)  # fmt: skip
    if isinstance(node, ast.BoolOp):
        parts = [_as_truth(_compile(value)) for value in node.values]
        combine = _and if isinstance(node.op, ast.And) else _or
        names = frozenset().union(*(p.names for p in parts))
        return _Expr("truth", lambda c, n: _fold_truth(combine, [p.evaluate(c, n) for p in parts]), names)
    if isinstance(node, ast.Compare):
        operands = [_compile(node.left), *(_compile_list(c) if isinstance(o, ast.In | ast.NotIn) else _compile(c)
                                           for o, c in zip(node.ops, node.comparators, strict=True))]  # fmt: skip
        pairs = zip(node.ops, operands, operands[1:], strict=False)
        tests = [_comparison(op, left, right) for op, left, right in pairs]
        names = frozenset().union(*(o.names for o in operands))
        if len(tests) == 1:
            return _Expr("truth", tests[0], names)
        return _Expr("truth", lambda c, n: _fold_truth(_and, [test(c, n) for test in tests]), names)
    if isinstance(node, ast.List | ast.Tuple):
        raise _Invalid("a list is only allowed after `in` or `not in`")
    raise _Invalid(f"`{ast.unparse(node)}` is not allowed (use comparisons, and/or/not, + - * /)")


def _compile_list(node: ast.AST) -> _Expr:
    if not isinstance(node, ast.List | ast.Tuple) or not node.elts:
        raise _Invalid("`in` needs a list of values, e.g. occupation in [\"Housewife\", \"Student\"]")
    items = [_compile(element) for element in node.elts]
    kinds = {item.kind for item in items}
    if len(kinds) != 1 or any(item.names for item in items):
        raise _Invalid("the values of an `in` list must all be numbers or all be quoted text")
    values = tuple(item.evaluate({}, 0) for item in items)
    return _Expr("list:" + kinds.pop(), lambda _c, _n: values)


def _comparison(op: ast.cmpop, left: _Expr, right: _Expr) -> Callable[[_Columns, int], _Truth]:
    symbol = _SYMBOLS.get(type(op), type(op).__name__)
    if isinstance(op, ast.In | ast.NotIn):
        if left.kind not in ("number", "text") or right.kind != "list:" + left.kind:
            raise _Invalid(f"`{symbol}` compares a column with a list of values of the same kind")
        negate = isinstance(op, ast.NotIn)

        def member(c: _Columns, n: int) -> _Truth:
            values, choices = _array(left.evaluate(c, n), n, left.kind), right.evaluate(c, n)
            known = _known(values, left.kind)
            inside = np.isin(values, choices) if left.kind == "number" else pd.Series(values).isin(choices).to_numpy()
            return _Truth(~inside if negate else inside, known)

        return member
    if type(op) not in _COMPARISONS:
        raise _Invalid(f"`{symbol}` is not a comparison this language has")
    if left.kind != right.kind or left.kind not in ("number", "text"):
        raise _Invalid(f"`{symbol}` compares {_kind_words(left)} with {_kind_words(right)}")
    if left.kind == "text" and not isinstance(op, ast.Eq | ast.NotEq):
        raise _Invalid(f"text can only be compared with == or != (not {symbol})")
    function, kind = _COMPARISONS[type(op)], left.kind

    def compare(c: _Columns, n: int) -> _Truth:
        a, b = left.evaluate(c, n), right.evaluate(c, n)  # a literal stays a scalar: it broadcasts
        if not isinstance(a, np.ndarray) and not isinstance(b, np.ndarray):
            a = _array(a, n, kind)
        known = _known(a, kind) & _known(b, kind)  # an array: at least one side is
        value = np.asarray(function(a, b), dtype=bool)  # object arrays compare element by element; NaN is False
        return _Truth(value & known, known)

    return compare


def _as_truth(expr: _Expr) -> _Expr:
    if expr.kind == "truth":
        return expr
    if expr.kind == "number":  # a bare flag: `is_pep` means `is_pep != 0`
        return _Expr("truth", lambda c, n: _nonzero(_array(expr.evaluate(c, n), n, "number")), expr.names)
    raise _Invalid(f"{_kind_words(expr)} is not a condition (compare it: column == \"value\")")


def _expect(expr: _Expr, kind: str, where: str) -> None:
    if expr.kind != kind:
        raise _Invalid(f"{where} needs numbers, not {_kind_words(expr)}")


def _kind_words(expr: _Expr) -> str:
    return {"number": "a number", "text": "text", "truth": "a condition"}.get(expr.kind, "a list")


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def _array(value: Any, n: int, kind: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    return np.full(n, value, dtype=np.float64 if kind == "number" else object)


def _known(values: np.ndarray | float | str | None, kind: str) -> np.ndarray | np.bool_:
    if kind == "number":
        return ~np.isnan(values)
    return np.not_equal(values, None)


def _arithmetic(function: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        result = function(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return np.where(np.isfinite(result), result, np.nan)  # x / 0 is unknown, not infinite


def _nonzero(values: np.ndarray) -> _Truth:
    known = ~np.isnan(values)
    return _Truth((values != 0) & known, known)


def _not(truth: _Truth) -> _Truth:
    return _Truth(~truth.value & truth.known, truth.known)


def _and(a: _Truth, b: _Truth) -> _Truth:
    true = a.value & a.known & b.value & b.known
    false = (~a.value & a.known) | (~b.value & b.known)
    return _Truth(true, true | false)


def _or(a: _Truth, b: _Truth) -> _Truth:
    true = (a.value & a.known) | (b.value & b.known)
    false = ~a.value & a.known & ~b.value & b.known
    return _Truth(true, true | false)


def _fold_truth(combine: Callable[[_Truth, _Truth], _Truth], parts: Sequence[_Truth]) -> _Truth:
    result = parts[0]
    for part in parts[1:]:
        result = combine(result, part)
    return result


# --- rules and policies ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyRule:
    id: str
    condition: str
    min_tier: str
    rationale: str
    _test: _Expr = field(repr=False, compare=False, default=None)  # type: ignore[assignment]

    @property
    def floor(self) -> int:
        """The rule's floor as a tier rank (0 = High)."""
        return TIER_RANK[self.min_tier]

    @property
    def columns(self) -> frozenset[str]:
        return self._test.names

    def matches(self, columns: _Columns, n: int) -> np.ndarray:
        """Per customer: the condition is known to be true."""
        truth = self._test.evaluate(columns, n)
        return truth.value & truth.known

    def text(self) -> str:
        return f"{self.condition} -> at least {self.min_tier}"


def compile_rule(raw: Mapping[str, Any]) -> PolicyRule:
    """One rule from its table in the file, checked and compiled (``_Invalid`` says what is wrong)."""
    if not isinstance(raw, Mapping):
        raise _Invalid("is not a table of id, condition, min_tier and rationale")
    unknown = sorted(set(raw) - {"id", "condition", "min_tier", "rationale"})
    if unknown:
        raise _Invalid(f"unknown key {unknown[0]!r} (a rule has id, condition, min_tier and rationale)")
    for key in ("id", "condition", "min_tier", "rationale"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise _Invalid(f"needs {key} as non-empty text")
    rule_id, condition = raw["id"].strip(), raw["condition"].strip()
    if not _RULE_ID.match(rule_id):
        raise _Invalid("id must start with a letter and hold only letters, digits and _ (at most 64)")
    if raw["min_tier"] not in FLOOR_TIERS:
        raise _Invalid(f"min_tier {raw['min_tier']!r} is not one of {', '.join(FLOOR_TIERS)}")
    if len(condition) > _MAX_CONDITION:
        raise _Invalid(f"condition is longer than {_MAX_CONDITION} characters")
    try:
        tree = ast.parse(condition, mode="eval")
    except SyntaxError as error:
        raise _Invalid(f"condition `{condition}` does not parse ({error.msg})") from None
    test = _as_truth(_compile(tree.body))
    return PolicyRule(id=rule_id, condition=condition, min_tier=raw["min_tier"], rationale=raw["rationale"].strip(),
                      _test=test)  # fmt: skip


@dataclass(frozen=True)
class Policy:
    """The rules in force (in file order), their version, and the SHA-256 of their canonical JSON."""

    version: str
    rules: tuple[PolicyRule, ...]
    source: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self._rules_json(), sort_keys=True).encode()).hexdigest()

    @cached_property
    def ids(self) -> list[str]:
        return [rule.id for rule in self.rules]

    @cached_property
    def floors(self) -> np.ndarray:
        """Each rule's floor as a tier rank (read-only: computed once, shared by every scored chunk)."""
        floors = np.array([rule.floor for rule in self.rules], dtype=np.intp)
        floors.setflags(write=False)
        return floors

    def _rules_json(self) -> list[dict[str, str]]:
        return [{"id": r.id, "condition": r.condition, "min_tier": r.min_tier, "rationale": r.rationale}
                for r in self.rules]  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "source": self.source, "rules": self._rules_json()}

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> Policy:
        return parse_policy(stored, source=str(stored.get("source") or "stored policy"))

    @cached_property
    def needed(self) -> frozenset[str]:
        """The columns the rules read."""
        return frozenset().union(*(rule.columns for rule in self.rules))

    def columns(self, batch: CustomerBatch, indicators: np.ndarray) -> dict[str, np.ndarray]:
        """What conditions read (only the columns the rules name): the indicators in natural units (blank flag =
        0), the other numbers, and text folded as literals are."""
        needed = self.needed
        columns: dict[str, np.ndarray] = {name: indicators[:, i] for i, name in enumerate(INDICATORS) if name in needed}
        for name in NUMERIC_COLUMNS:
            if name in needed and name not in columns and name in batch.numbers:
                columns[name] = batch.numbers[name]
        for name in TEXT_COLUMNS:
            values = batch.categories.get(name)
            if values is not None and name in needed:
                codes, levels = pd.factorize(values)  # fold each distinct value once
                folded = np.array([_fold(str(level)) for level in levels] + [None], dtype=object)
                columns[name] = folded[codes]  # code -1 (missing) takes the trailing None
        return columns

    def matches(self, batch: CustomerBatch, indicators: np.ndarray) -> np.ndarray:
        """(customers, rules) booleans: rule j's condition is known to be true for customer i."""
        out = np.zeros((batch.n, len(self.rules)), dtype=bool)
        if self.rules:
            columns = self.columns(batch, indicators)
            for j, rule in enumerate(self.rules):
                out[:, j] = rule.matches(columns, batch.n)
        return out

    def floor_ranks(self, matched: np.ndarray) -> np.ndarray:
        """Per customer, the riskiest floor of the rules it matches (rank; 2 = Low = no floor)."""
        low = TIER_RANK[TIERS[-1]]
        if not self.rules:
            return np.full(matched.shape[0], low, dtype=np.intp)
        return np.where(matched, self.floors[None, :], low).min(axis=1)


def parse_policy(document: Mapping[str, Any], *, source: str) -> Policy:
    """A policy from a parsed rules document; one PolicyError line for the first problem."""
    version = document.get("version")
    if not isinstance(version, str | int) or not str(version).strip():
        raise PolicyError(f"{source}: needs a version (text, e.g. version = \"2026-11-30.1\") at the top")
    unknown = sorted(set(document) - {"version", "rules", "source"})
    if unknown:
        raise PolicyError(f"{source}: unknown top-level key {unknown[0]!r} (a rules file has version and [[rules]])")
    raw_rules = document.get("rules", [])
    if not isinstance(raw_rules, list):
        raise PolicyError(f"{source}: rules must be a list of [[rules]] tables")
    rules, seen = [], set()
    for position, raw in enumerate(raw_rules, start=1):
        label = raw.get("id") if isinstance(raw, Mapping) and isinstance(raw.get("id"), str) else f"#{position}"
        try:
            rule = compile_rule(raw)
        except _Invalid as problem:
            raise PolicyError(f"{source}: rule {label!r}: {problem}") from None
        if rule.id in seen:
            raise PolicyError(f"{source}: rule {rule.id!r}: the id is used by an earlier rule")
        seen.add(rule.id)
        rules.append(rule)
    return Policy(version=str(version).strip(), rules=tuple(rules), source=source)


def load_policy(path: str | Path | None = None) -> Policy:
    """The rules file at ``path`` (when None: $SEGMENTATION_RULES, else the bundled ``policy_rules.toml``), checked
    rule by rule."""
    file = Path(path) if path else default_rules_path()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(f"{file}: rules file not found") from None
    except IsADirectoryError:
        raise PolicyError(f"{file}: is a folder, not a rules file") from None
    except UnicodeDecodeError:
        raise PolicyError(f"{file.name}: is not UTF-8 text (a rules file is TOML)") from None
    except OSError as error:
        raise PolicyError(f"{file}: cannot be read ({error.strerror or 'I/O error'})") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PolicyError(f"{file.name}: is not valid TOML ({error})") from None
    return parse_policy(document, source=file.name)


# --- the rating: segment tier, raised by the score, raised by the rules ----------------------------------------

BASIS: Final[tuple[str, ...]] = ("segment", "score", "rule")


@dataclass(frozen=True)
class Rating:
    """Per customer, as tier ranks (0 = High): the segment's tier, the tier the score reaches on its own, the
    rating before rules (the riskier of the two) and the final rating (raised to the floors of matching rules)."""

    segment_rank: np.ndarray
    score_rank: np.ndarray
    before_rules: np.ndarray
    risk_rank: np.ndarray
    matched: np.ndarray  # (customers, rules): the rule's condition is true for the customer

    def raised(self, policy: Policy) -> np.ndarray:
        """(customers, rules): the rule matched and its floor is above the rating before rules."""
        return self.matched & (policy.floors[None, :] < self.before_rules[:, None])

    @property
    def basis(self) -> np.ndarray:
        """What decided each rating: "rule" (a rule raised it), "score" (its score reached a riskier tier than its
        segment's) or "segment"."""
        code = np.where(self.risk_rank < self.before_rules, 2, np.where(self.score_rank < self.segment_rank, 1, 0))
        return np.array(BASIS, dtype=object)[code]


def rate(segment_rank: np.ndarray, score_rank: np.ndarray, matched: np.ndarray, policy: Policy) -> Rating:
    """The one definition of a customer's rating: the riskiest of its segment's tier, its score's tier and the
    floors of the rules it matches."""
    before = np.minimum(segment_rank, score_rank).astype(np.int8)
    final = np.minimum(before, policy.floor_ranks(matched)).astype(np.int8)
    return Rating(segment_rank=segment_rank, score_rank=score_rank, before_rules=before, risk_rank=final,
                  matched=matched)  # fmt: skip


def rule_id_lists(chosen: np.ndarray, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """The rules chosen per customer ((customers, rules) booleans, e.g. ``Rating.matched``) as (offsets, ids):
    customer i's are ``ids[offsets[i]:offsets[i+1]]``, in file order (an Arrow-style list column, built without a
    Python loop over customers)."""
    rows, columns = np.nonzero(chosen)
    offsets = np.zeros(chosen.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=chosen.shape[0]), out=offsets[1:])
    return offsets, np.array(policy.ids, dtype=object)[columns]


def rank_inversions(scores: np.ndarray, ranks: np.ndarray) -> int:
    """Customers rated below some customer with a lower score (target 0 for the rating before rules)."""
    inverted = 0
    for rank in range(1, len(TIERS)):
        riskier = scores[ranks < rank]
        if riskier.size:
            inverted += int(((ranks == rank) & (scores > riskier.min())).sum())
    return inverted


def governance(rating: Rating, scores: np.ndarray, policy: Policy) -> list[dict[str, object]]:
    """The run's governance figures, one row each (measure, item, customers): the tier mix of segments alone,
    before rules and after rules; customers each rule matched and raised; rank inversions of the segment tiers
    alone and of the rating before rules."""
    rows: list[dict[str, object]] = []
    for measure, ranks in (("tier_mix_segment", rating.segment_rank), ("tier_mix_before_rules", rating.before_rules),
                           ("tier_mix_after_rules", rating.risk_rank)):  # fmt: skip
        counts = np.bincount(ranks, minlength=len(TIERS))
        rows += [{"measure": measure, "item": tier, "customers": int(counts[r])} for r, tier in enumerate(TIERS)]
    matched, raised = rating.matched.sum(axis=0), rating.raised(policy).sum(axis=0)
    for j, rule in enumerate(policy.rules):
        rows.append({"measure": "rule_matched", "item": rule.id, "customers": int(matched[j])})
        rows.append({"measure": "rule_raised", "item": rule.id, "customers": int(raised[j])})
    rows.append({"measure": "rank_inversions_segment_only", "item": "",
                 "customers": rank_inversions(scores, rating.segment_rank)})  # fmt: skip
    rows.append({"measure": "rank_inversions", "item": "", "customers": rank_inversions(scores, rating.before_rules)})
    return rows


def floor_violations(policy: Policy, batch: CustomerBatch, indicators: np.ndarray, risk_tiers: np.ndarray
                     ) -> dict[str, int]:  # fmt: skip
    """Per rule, the customers rated below its floor although they match it (``risk_tiers``: tier names, one per
    customer of ``batch``). Empty when every rating respects every rule."""
    codes = pd.Categorical(risk_tiers, categories=list(TIERS)).codes  # the rank; -1: no tier (counts as below)
    given = np.where(codes >= 0, codes, len(TIERS))
    below = policy.matches(batch, indicators) & (given[:, None] > policy.floors[None, :])
    counts = below.sum(axis=0)
    return {rule.id: int(counts[j]) for j, rule in enumerate(policy.rules) if counts[j]}
