"""A lab: its exercises, its live context (built once) and a score of what was checked."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InputError
from .exercises import CheckResult, Context, Exercise, judge


class Lab:
    """The exercises of one notebook, checked against values computed live.

    ``setup`` builds the context (model, photo, explanations) on the first check and
    keeps it, so each check costs only what its own expected value costs.
    """

    def __init__(
        self, name: str, title: str, setup: Callable[[], Context], exercises: Sequence[Exercise]
    ) -> None:
        ids = [e.id for e in exercises]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate exercise ids in lab {name!r}: {ids}")
        self.name = name
        self.title = title
        self._setup = setup
        self._context: Context | None = None
        self.exercises = {e.id: e for e in exercises}
        self.results: dict[str, CheckResult] = {}

    @property
    def context(self) -> Context:
        """The lab's model, inputs and explanations, built on first use."""
        if self._context is None:
            self._context = self._setup()
        return self._context

    def question(self, qid: str) -> str:
        """The text of exercise ``qid``."""
        return self._exercise(qid).question

    def check(self, qid: str, answer: Any) -> CheckResult:
        """Check ``answer`` to exercise ``qid``; the result prints as ✓ or ✗ with a hint."""
        exercise = self._exercise(qid)
        unanswered = answer is Ellipsis or answer is None  # judged without the context
        result = judge(exercise, answer, None if unanswered else self.context)
        self.results[qid] = result
        return result

    def expected(self, qid: str) -> Any:
        """The live expected value of ``qid`` (for instructors and tests)."""
        return self._exercise(qid).expected(self.context)

    def summary(self) -> str:
        """One line: how many exercises were answered correctly so far."""
        right = sum(r.correct for r in self.results.values())
        todo = [q for q in self.exercises if q not in self.results or not self.results[q]]
        rest = f"; still to do: {', '.join(todo)}" if todo else ""
        return f"{self.title}: {right}/{len(self.exercises)} exercises correct{rest}"

    def _exercise(self, qid: str) -> Exercise:
        try:
            return self.exercises[qid]
        except KeyError:
            raise InputError(
                f"lab {self.name!r} has no exercise {qid!r}; it has {', '.join(self.exercises)}"
            ) from None

    def __repr__(self) -> str:
        return f"<Lab {self.name!r}: {len(self.exercises)} exercises>"
