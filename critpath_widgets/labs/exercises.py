"""Self-checking exercises: an answer is compared with a value computed live from the model.

An :class:`Exercise` knows how to compute its own expected value from the lab's context
(the model, the photo, an explanation, all built once per kernel and cached), how close an
answer must be, and which hints to give: a *mistake* is a value a common wrong approach
gives (the full network's logit instead of the pathway's, say); an answer matching it gets
that mistake's hint, any other wrong answer the exercise's general hint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError

Context = Any
"""Whatever a lab's ``setup`` returns (a namespace of model, inputs, explanations)."""


@dataclass(frozen=True)
class Mistake:
    """A value a common wrong approach computes, and the hint that answer deserves."""

    #: ``f(ctx)`` -> the value the wrong approach gives, computed live like the expected one
    value: Callable[[Context], Any]
    #: what to say to an answer equal to that value
    hint: str


@dataclass(frozen=True)
class Exercise:
    """One question: its text, its live expected value, how to compare, and hints.

    ``kind`` chooses the comparison: ``"number"`` (within ``rtol``/``atol``), ``"int"``
    (exact), ``"set"`` (the same elements, order ignored), ``"choice"`` (one of
    ``choices``, case-insensitive), ``"bool"``.
    """

    #: the name ``check`` takes ("q1", ...)
    id: str
    #: the question, repeated in the message of an unanswered or unreadable answer
    question: str
    #: ``f(ctx)`` -> the right answer, computed from the lab's context on every check
    expected: Callable[[Context], Any]
    #: the comparison: "number", "int", "set", "choice" or "bool"
    kind: str = "number"
    #: the hint for a wrong answer that matches no :class:`Mistake`
    hint: str = ""
    #: common wrong answers, each with its own hint (tried in order)
    mistakes: Sequence[Mistake] = ()
    #: relative tolerance of a "number" comparison
    rtol: float = 1e-2
    #: absolute tolerance of a "number" comparison
    atol: float = 1e-6
    #: the accepted answers of a "choice" exercise (compared case-insensitively)
    choices: Sequence[str] = ()
    #: the unit of the answer, for the reader (the comparison does not use it)
    unit: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("number", "int", "set", "choice", "bool"):
            raise ValueError(f"unknown exercise kind {self.kind!r}")


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check; true when the answer is right. Shown as one message."""

    #: the exercise's id
    id: str
    #: whether the answer is right
    correct: bool
    #: the one line shown: ✓ correct, ✗ with a hint, or "not answered yet"
    message: str
    #: False while the answer is still ``...`` (or None)
    answered: bool = True
    #: the live expected value (None when unanswered), for tests and instructors
    expected: Any = field(default=None, repr=False)

    def __bool__(self) -> bool:
        return self.correct

    def __repr__(self) -> str:
        return self.message

    def _repr_markdown_(self) -> str:
        return self.message


def _as_number(answer: Any) -> float:
    """A Python float from a float, int, 0-d tensor or 0-d/1-element array."""
    item = getattr(answer, "item", None)
    if callable(item):
        try:
            answer = item()
        except (ValueError, RuntimeError) as err:
            raise InputError(
                f"expected one number, got an array of shape {tuple(getattr(answer, 'shape', ()))}"
            ) from err
    if isinstance(answer, bool) or not isinstance(answer, int | float):
        raise InputError(f"expected a number, got {type(answer).__name__}: {answer!r}")
    return float(answer)


def _as_set(answer: Any) -> frozenset:
    """The elements of a list, tuple, set, tensor or array, as plain Python values."""
    tolist = getattr(answer, "tolist", None)
    if callable(tolist):
        answer = tolist()
    if isinstance(answer, str) or not isinstance(answer, Iterable):
        raise InputError(f"expected a list or set, got {type(answer).__name__}: {answer!r}")
    return frozenset(a if not isinstance(a, list) else tuple(a) for a in answer)


def same(ex: Exercise, answer: Any, expected: Any) -> bool:
    """Whether ``answer`` counts as ``expected`` under ``ex``'s comparison."""
    if ex.kind == "number":
        a, b = _as_number(answer), _as_number(expected)
        return math.isfinite(a) and math.isclose(a, b, rel_tol=ex.rtol, abs_tol=ex.atol)
    if ex.kind == "int":
        a = _as_number(answer)
        return a == int(a) and int(a) == int(_as_number(expected))
    if ex.kind == "set":
        return _as_set(answer) == _as_set(expected)
    if ex.kind == "bool":
        if not isinstance(answer, bool):
            raise InputError(f"expected True or False, got {answer!r}")
        return answer == bool(expected)
    if not isinstance(answer, str):
        raise InputError(f"expected one of {list(ex.choices)}, got {answer!r}")
    if answer.strip().lower() not in {c.lower() for c in ex.choices}:
        raise InputError(f"expected one of {list(ex.choices)}, got {answer!r}")
    return answer.strip().lower() == str(expected).lower()


def judge(ex: Exercise, answer: Any, ctx: Context) -> CheckResult:
    """Compare ``answer`` with the live expected value and word the outcome."""
    if answer is Ellipsis or answer is None:
        return CheckResult(
            ex.id,
            False,
            f"{ex.id}: not answered yet. Replace `...` with your answer. {ex.question}",
            answered=False,
        )
    expected = ex.expected(ctx)
    try:
        right = same(ex, answer, expected)
    except InputError as err:
        return CheckResult(ex.id, False, f"{ex.id}: ✗ {err}. {ex.question}", expected=expected)
    if right:
        return CheckResult(ex.id, True, f"{ex.id}: ✓ correct.", expected=expected)
    for m in ex.mistakes:
        try:
            if same(ex, answer, m.value(ctx)):
                return CheckResult(
                    ex.id, False, f"{ex.id}: ✗ not quite. Hint: {m.hint}", expected=expected
                )
        except InputError:
            continue
    hint = f" Hint: {ex.hint}" if ex.hint else ""
    return CheckResult(ex.id, False, f"{ex.id}: ✗ not quite.{hint}", expected=expected)
