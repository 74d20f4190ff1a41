"""StepTool's step-grained rewards (Yu et al. 2024) as pure functions over plain dicts.

StepTool ("StepTool: Enhancing Multi-Step Tool Usage in LLMs through Step-Grained
Reinforcement Learning", github.com/yuyq18/StepTool) rewards each tool call of a trajectory
with two terms and the final answer with a third:

- **SuccCalling** — did the call succeed (0/1): :func:`call_succeeded`;
- **Contribution** — how much the call contributed to the final answer (StepTool's judge
  scores 0-5; here 0-1): :func:`contribution`;
- **IsSolved** — the task status of the final answer, Solved / Unsure / Unsolved
  (1 / 0.5 / 0): :func:`task_status`.

The paper's reward of intermediate step ``t`` is ``α·SuccCalling + Contribution`` and that of
the final step ``IsSolved``; :func:`step_rewards` combines any per-step terms with weights,
and with ``steptool_code_weights=True`` reproduces what StepTool's PPO code does with the
scores (``src/steptool/step_ppotrainer.py``, ``compute_rewards``: step ``k`` of ``n`` scores
is multiplied by ``n - 1 - k``, so the last, final-answer score is multiplied by 0).

StepTool annotates trajectories with GPT-4; here the judge is any callable
``judge(query, steps, final_answer) -> {"contribution": [...], "task_status": x}``
(:data:`Judge`): :func:`rule_judge` is the rule-based default, :func:`llm_judge` wraps any
text generator with StepTool's annotation prompt (:data:`STEPTOOL_JUDGE_PROMPT`), and
:func:`load_steptool_annotations` / :func:`rescore` read and re-judge trajectories stored in
StepTool's annotation format.

A *step* is one tool call as a plain dict::

    {"name": "get_city", "arguments": {"city": "Paris"}, "output": '{"country": "France"}', "ok": True}

``arguments`` may be a JSON string and ``output`` may be any JSON value; StepTool's
``"response"`` (``'{"error": "", "response": ...}'``) is read in place of ``output``; ``ok`` is
optional (without it, success is read from the output, see :func:`call_succeeded`).

This module imports nothing of toolenv's and no torch: it scores stored data offline.
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rewards.math import extract_number, round2_equal

__all__ = [
    "STEPTOOL_JUDGE_PROMPT",
    "TASK_STATUS",
    "KNOWN_STEP_TERMS",
    "Judge",
    "call_succeeded",
    "calls_match",
    "contribution",
    "format_steps",
    "llm_judge",
    "load_steptool_annotations",
    "parse_judge_reply",
    "parse_task_status",
    "rescore",
    "rule_judge",
    "run_judge",
    "step_rewards",
    "steptool_code_weighting",
    "steptool_step_terms",
    "task_status",
]

#: StepTool's answer statuses and their values.
TASK_STATUS: Mapping[str, float] = {"Solved": 1.0, "Unsure": 0.5, "Unsolved": 0.0}

#: A judge: ``judge(query, steps, final_answer) -> {"contribution": [one 0-1 value per step], "task_status": 0-1}``.
#: Judges that also accept the keywords ``answer`` (the gold answer) and ``gold_calls`` get them
#: from :func:`run_judge` (as :func:`rule_judge` does); an LLM judge, like StepTool's, judges without.
Judge = Callable[..., Mapping[str, Any]]

#: StepTool's step-grained annotation prompt (the README's reference prompt and
#: ``src/reward/evaluators/*/template.txt``), adapted to ask for a JSON reply instead of a
#: function call. Placeholders: ``{query}``, ``{mid_steps}`` (see :func:`format_steps`), ``{final_answer}``.
STEPTOOL_JUDGE_PROMPT = """Query:
{query}

Intermediate Steps:
{mid_steps}

Final Answer:
{final_answer}

Given the query, all the intermediate steps and the final answer, evaluate the whole task-solving process with these rules:
(1) Successful Tool Calling: for each intermediate step, decide whether the tool was called successfully: 0 (no) or 1 (yes).
(2) Contribution to Final Answer: for each intermediate step, rate its contribution to the final answer from 0 (none) to 5 (essential).
(3) Final Answer Status: decide whether the final answer is 'Solved', 'Unsure' or 'Unsolved'.

Reply with one JSON object with the keys "succeed_tool_calling" (one 0 or 1 per intermediate step), "contribution_to_final_answer" (one score from 0 to 5 per intermediate step) and "final_answer_status" ("Solved", "Unsure" or "Unsolved")."""

# Numbers as written in text: optional thousands separators and decimals, unsigned, not glued
# to a word ("E1007" holds no number, "1,250.5" is one).
_NUMBER = re.compile(r"(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w])|(?<![\w.])\.\d+(?![\w])")
# How ToolBench/StepTool tool responses say that a call failed (StepTool's rule-based annotation).
_FAILED_RESPONSE = re.compile(r"\berror\b|\bwrong\b|is empty|^\s*please\b", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# Reading steps
# ---------------------------------------------------------------------------------------------


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in "{[\"" or text[:1].isdigit() or text[:1] == "-":
            try:
                return json.loads(text)
            except ValueError:
                return value
    return value


def _arguments(step: Mapping[str, Any]) -> Any:
    args = step.get("arguments", {})
    if isinstance(args, str):
        parsed = _maybe_json(args)
        return parsed if isinstance(parsed, dict) else ({"input": args} if args.strip() else {})
    return args


def _raw_output(step: Mapping[str, Any]) -> Any:
    return step["output"] if "output" in step else step.get("response")


def _output(step: Mapping[str, Any]) -> Any:
    """The step's output as a JSON value, with ToolBench's ``{"error", "response"}`` wrapper removed."""
    value = _maybe_json(_raw_output(step))
    if isinstance(value, dict) and set(value) == {"error", "response"}:
        value = _maybe_json(value["response"])
    return value


def call_succeeded(step: Mapping[str, Any]) -> float:
    """StepTool's SuccCalling: 1.0 when the step's call succeeded, else 0.0.

    An explicit ``ok`` decides. Otherwise the output does: ``None`` or empty text fails;
    text starting with ``Error`` fails (toolenv's convention); a ToolBench response
    ``{"error": ..., "response": ...}`` fails when ``error`` is set, when the response has a
    ``status`` of 400 or more, or when a text response says ``error``/``wrong``/``is empty`` or
    starts with ``Please`` (the rule of StepTool's ``src/reward/annotation_by_rules.ipynb``).

    >>> call_succeeded({"name": "get_city", "output": '{"country": "France"}', "ok": True})
    1.0
    >>> call_succeeded({"name": "get_city", "output": "Error: Unknown city 'Pariss'."})
    0.0
    >>> call_succeeded({"name": "x", "response": '{"error": "", "response": "Please give an email"}'})
    0.0
    """
    ok = step.get("ok")
    if ok is not None:
        return 1.0 if ok else 0.0
    raw = _raw_output(step)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return 0.0
    if isinstance(raw, str) and raw.lstrip().casefold().startswith("error"):
        return 0.0
    value = _maybe_json(raw)
    if isinstance(value, dict) and set(value) == {"error", "response"}:
        if value["error"]:
            return 0.0
        response = _maybe_json(value["response"])
        status = response.get("status") if isinstance(response, dict) else None
        if isinstance(status, (int, float)) and not isinstance(status, bool) and status >= 400:
            return 0.0
        if isinstance(response, str) and _FAILED_RESPONSE.search(response):
            return 0.0
    return 1.0


# ---------------------------------------------------------------------------------------------
# Contribution
# ---------------------------------------------------------------------------------------------


def _norm_text(text: str) -> str:
    return " ".join(text.split()).casefold()


def _leaves(value: Any) -> list[Any]:
    """The scalar values inside a JSON value (dict keys and booleans/None excluded)."""
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value] if math.isfinite(value) else []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [str(value)]


class _Text:
    """The numbers written in some values (as written) and their text, normalised."""

    __slots__ = ("numbers", "strings", "text")

    def __init__(self, value: Any) -> None:
        numbers: list[str] = []
        parts: list[str] = []
        for leaf in _leaves(value):
            if isinstance(leaf, str):
                numbers.extend(m.group(0) for m in _NUMBER.finditer(leaf))
                parts.append(_norm_text(leaf))
            else:
                written = repr(leaf) if isinstance(leaf, float) else str(leaf)
                numbers.append(written.lstrip("-"))
                parts.append(written)
        self.numbers = numbers
        self.strings = frozenset(parts)
        self.text = " | ".join(parts)

    def has_number(self, value: float) -> bool:
        return any(_writes(w, value) for w in self.numbers)

    def has_string(self, value: str) -> bool:
        if value not in self.text:  # fast path: most strings do not occur at all
            return False
        return re.search(rf"(?<!\w){re.escape(value)}(?!\w)", self.text) is not None


def _significant_digits(written: str) -> int:
    digits = written.replace(",", "").replace(".", "").lstrip("0")
    return len(digits)


def _writes(written: str, value: float) -> bool:
    """Whether the number ``written`` (unsigned text) is ``|value|``, exactly or rounded.

    Rounded means: ``value`` rounded to the decimals ``written`` has, with at least two
    significant digits written (``1.08`` writes 1.0832; ``0.01`` does not write 0.0067).
    """
    try:
        x = float(written.replace(",", ""))
    except ValueError:
        return False
    v = abs(value)
    if abs(x - v) <= 1e-9 * max(1.0, v):
        return True
    decimals = len(written.split(".", 1)[1]) if "." in written else 0
    return _significant_digits(written) >= 2 and round(v, decimals) == x


def _facts(value: Any) -> tuple[list[float], list[str]]:
    """The numbers and strings an output states."""
    numbers: list[float] = []
    strings: list[str] = []
    for leaf in _leaves(value):
        if isinstance(leaf, str):
            found = [m.group(0) for m in _NUMBER.finditer(leaf)]
            numbers.extend(abs(float(n.replace(",", ""))) for n in found)
            text = _norm_text(leaf)
            if 2 <= len(text) <= 100 and not (len(found) == 1 and found[0] == leaf.strip()):
                strings.append(text)
        else:
            numbers.append(abs(float(leaf)))
    return numbers, strings


def _norm_value(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return round(float(value), 9)
    if isinstance(value, str):
        text = "".join(value.split()).casefold()
        try:
            return round(float(text.replace(",", "")), 9)
        except ValueError:
            return text
    if isinstance(value, Mapping):
        return {str(k): _norm_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_norm_value(v) for v in value]
    return str(value)


def calls_match(step: Mapping[str, Any], gold: Mapping[str, Any]) -> bool:
    """Whether a step's call is the gold call: same name, same arguments after normalising.

    Names compare case-insensitively; argument strings ignore case and all whitespace; numbers
    and number strings compare as numbers (``"85000"`` is ``85000.0``).

    >>> calls_match({"name": "calculator", "arguments": '{"expression": "91000 * 1.085"}'},
    ...             {"name": "calculator", "arguments": {"expression": "91000*1.085"}})
    True
    >>> calls_match({"name": "get_city", "arguments": {"city": "Paris"}}, {"name": "get_city", "arguments": {"city": "Lyon"}})
    False
    """
    if str(step.get("name", "")).strip().casefold() != str(gold.get("name", "")).strip().casefold():
        return False
    return _norm_value(_arguments(step)) == _norm_value(_arguments(gold))


def contribution(
    steps: Sequence[Mapping[str, Any]],
    final_answer: str | None,
    gold_calls: Sequence[Mapping[str, Any]] | None = None,
    *,
    query: str = "",
) -> list[float]:
    """StepTool's Contribution of each step, by rule: 1.0 or 0.0 per step.

    The rule, for step ``k``:

    1. A failed call (:func:`call_succeeded` is 0) contributes 0, and so does a repeat of an
       earlier successful call (the same tool with the same arguments): its facts were already
       brought by that call, which keeps the credit.
    2. Its *facts* are the values its output states: every number and string leaf of the JSON
       output (numbers inside strings too; non-JSON text is one string). From a structured
       output (an object or a list) the values it did not bring are dropped: those written in
       the ``query`` (numbers, or strings as whole words) or equal to one of step ``k``'s own
       arguments (a lookup that echoes its key gets no credit for the key). A bare result (one
       number or text, like a calculator's) is kept whole, even when it happens to equal an
       input (``2 - 1`` is ``1``).
    3. It contributes 1 if a fact is *used later*: it appears in the arguments of a later step
       or in the final answer. A number appears where it is written exactly or rounded with at
       least two significant digits (``1.08`` uses 1.0832), ignoring sign and thousands
       separators; a string appears as a whole-word, case-insensitive match (``"Research"`` in
       ``{"department": "research"}``).
    4. It also contributes 1 if its call matches a not-yet-matched gold call
       (:func:`calls_match`), when ``gold_calls`` are given.
    5. Otherwise 0.

    The rule knows nothing of meaning, so a small number that recurs by chance (a floor
    ``3`` and ``"3 * 12"``) counts as used. An LLM judge may give any value in [0, 1]
    (StepTool's 0-5 scale divided by 5).

    Args:
        steps: The tool-call steps, in order (the final answer is not a step).
        final_answer: The final answer text, or ``None`` if there is none.
        gold_calls: Ground-truth calls (``{"name", "arguments"}`` dicts), each matched at most once.
        query: The user's question, whose values are not new facts.

    >>> steps = [
    ...     {"name": "find_employee", "arguments": {"name": "Mei Lin"}, "ok": True,
    ...      "output": {"name": "Mei Lin", "department": "Engineering", "city": "Singapore"}},
    ...     {"name": "get_city", "arguments": {"city": "Paris"}, "ok": True, "output": {"country": "France"}},
    ...     {"name": "get_department", "arguments": {"department": "Engineering"}, "ok": True,
    ...      "output": {"manager": "Amara Okafor", "floor": 5}},
    ... ]
    >>> contribution(steps, "It is on floor 5.", query="On which floor is Mei Lin's department?")
    [1.0, 0.0, 1.0]
    >>> contribution([steps[0], steps[0], steps[2]], "It is on floor 5.", query="On which floor is Mei Lin's department?")
    [1.0, 0.0, 1.0]
    """
    arg_texts = [_Text(_arguments(s)) for s in steps]
    answer_text = _Text(final_answer or "")
    query_text = _Text(query)
    gold_left = list(gold_calls or ())
    out: list[float] = []
    for k, step in enumerate(steps):
        if not call_succeeded(step) or any(call_succeeded(e) and calls_match(step, e) for e in steps[:k]):
            out.append(0.0)
            continue
        matched = False
        for j, gold in enumerate(gold_left):
            if calls_match(step, gold):
                del gold_left[j]
                matched = True
                break
        output = _output(step)
        numbers, strings = _facts(output)
        if isinstance(output, (dict, list, tuple)):  # a bare result is never an echo
            own = arg_texts[k]
            numbers = [v for v in numbers if not (query_text.has_number(v) or own.has_number(v))]
            strings = [s for s in strings if not (query_text.has_string(s) or s in own.strings)]
        later = [*arg_texts[k + 1 :], answer_text]
        used = any(t.has_number(v) for t in later for v in numbers) or any(
            t.has_string(s) for t in later for s in strings
        )
        out.append(1.0 if used or matched else 0.0)
    return out


# ---------------------------------------------------------------------------------------------
# Task status
# ---------------------------------------------------------------------------------------------


def parse_task_status(label: Any) -> float:
    """A task status as a number: ``"Solved"`` / ``"AnswerStatus.Solved"`` 1.0, ``"Unsure"`` 0.5, else 0.0.

    >>> parse_task_status("AnswerStatus.Unsure"), parse_task_status("Solved"), parse_task_status(1)
    (0.5, 1.0, 1.0)
    """
    if isinstance(label, (int, float)) and not isinstance(label, bool):
        return min(1.0, max(0.0, float(label)))
    name = str(label).strip().rsplit(".", 1)[-1].strip().casefold()
    return next((v for k, v in TASK_STATUS.items() if k.casefold() == name), 0.0)


def task_status(
    final_answer: str | None,
    *,
    answer: str | None = None,
    steps: Sequence[Mapping[str, Any]] | None = None,
) -> float:
    """StepTool's IsSolved by rule: Solved 1.0, Unsure 0.5, Unsolved 0.0.

    With a numeric gold ``answer``, the *stated* value is the last number of the final answer
    (TRICE's check, as :func:`rewards.math.numeric_match`: equal after rounding to 2 decimals):

    - **Solved**: the stated value is the gold answer, and the answer is *grounded*: at least one
      step's call succeeded (not checked when ``steps`` is None).
    - **Unsure**: the stated value is right but nothing grounds it (no call succeeded: a guess
      or a memorised value, which ToolEval calls "unable to verify"); or the stated value is
      wrong but the gold value is among the answer's other numbers (several candidates).
    - **Unsolved**: anything else, and a missing or empty answer.

    A non-numeric gold answer must appear in the answer as whole words (case-insensitive).
    Without a gold answer the rule cannot check the value: a grounded, non-empty answer is
    Unsure and any other Unsolved.

    >>> ok = [{"name": "find_employee", "ok": True, "output": "{}"}]
    >>> task_status("It is on floor 5.", answer="5", steps=ok), task_status("5", answer="5", steps=[])
    (1.0, 0.5)
    >>> task_status("Floor 5 or maybe 6", answer="5", steps=ok), task_status("6", answer="5", steps=ok)
    (0.5, 0.0)
    """
    if final_answer is None or not str(final_answer).strip():
        return 0.0
    text = str(final_answer)
    grounded = steps is None or any(call_succeeded(s) for s in steps)
    if answer is None:
        return 0.5 if grounded else 0.0
    gold = extract_number(answer)
    if gold is not None and re.fullmatch(r"\s*[-$€£]?[\d,.]+\s*%?\s*", str(answer)):
        if round2_equal(extract_number(text), gold):
            return 1.0 if grounded else 0.5
        candidates = (float(m.group(0).replace(",", "")) for m in _NUMBER.finditer(text))
        return 0.5 if any(round2_equal(c, abs(gold)) for c in candidates) else 0.0
    if _Text(text).has_string(_norm_text(str(answer))):
        return 1.0 if grounded else 0.5
    return 0.0


# ---------------------------------------------------------------------------------------------
# Combining terms into step rewards
# ---------------------------------------------------------------------------------------------


#: Every per-step term an env of this suite can report (a weight may name one absent from a given episode).
KNOWN_STEP_TERMS = frozenset({
    "call_succeeded", "contribution", "task_status", "answer_correct", "call_wellformed", "format_error", "step_cost",
})


def step_rewards(
    step_terms: Sequence[Mapping[str, float]],
    weights: Mapping[str, float],
    *,
    steptool_code_weights: bool = False,
) -> list[float]:
    """One scalar per step: ``Σ weights[term] × step_terms[k][term]`` (missing terms count 0).

    The default is the paper's reading: the reward of step ``k`` is its weighted terms, e.g.
    ``α·SuccCalling + Contribution`` for a tool call and ``IsSolved`` for the final step.

    With ``steptool_code_weights=True`` the scores are then weighted as StepTool's PPO code does
    (``StepPPOTrainer.compute_rewards``: ``reward[last token of step k] += score[k] * (n - 1 - k)``
    for ``n`` scores): step ``k``'s score is multiplied by ``n - 1 - k``, so early steps weigh
    more and the last score — the final answer's IsSolved — is multiplied by 0.

    >>> terms = [{"call_succeeded": 1, "contribution": 1}, {"call_succeeded": 1, "contribution": 0},
    ...          {"task_status": 1}]
    >>> weights = {"call_succeeded": 0.5, "contribution": 1.0, "task_status": 1.0}
    >>> step_rewards(terms, weights)
    [1.5, 0.5, 1.0]
    >>> step_rewards(terms, weights, steptool_code_weights=True)
    [3.0, 0.5, 0.0]
    """
    known = set(KNOWN_STEP_TERMS).union(*(terms.keys() for terms in step_terms))
    unknown = sorted(set(weights) - known)
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown term(s) {unknown} in weights: expected names from {sorted(known)}.{hint}")
    scores = [float(sum(weights.get(k, 0.0) * float(v) for k, v in terms.items() if v)) for terms in step_terms]
    return steptool_code_weighting(scores) if steptool_code_weights else scores


def steptool_code_weighting(scores: Sequence[float]) -> list[float]:
    """StepTool's PPO code's weighting of per-step scores: step ``k`` of ``n`` times ``n - 1 - k``.

    ``StepPPOTrainer.compute_rewards`` adds ``score[k] * (len(score) - k - 1)`` to step k's last
    token, so the last score (the final answer's IsSolved) gets weight 0.

    >>> steptool_code_weighting([0.5, 1.0, 1.0])
    [1.0, 1.0, 0.0]
    """
    n = len(scores)
    return [float(s) * (n - 1 - k) for k, s in enumerate(scores)]


def steptool_step_terms(
    call_succeeded: Sequence[float], contribution: Sequence[float], task_status: float
) -> list[dict[str, float]]:
    """Per-step terms in StepTool's layout: one dict per tool call, then the final step's.

    >>> steptool_step_terms([1, 0], [1.0, 0.0], 0.5)
    [{'call_succeeded': 1.0, 'contribution': 1.0}, {'call_succeeded': 0.0, 'contribution': 0.0}, {'task_status': 0.5}]
    """
    calls = [{"call_succeeded": float(s), "contribution": float(c)} for s, c in zip(call_succeeded, contribution)]
    return [*calls, {"task_status": float(task_status)}]


# ---------------------------------------------------------------------------------------------
# Judges
# ---------------------------------------------------------------------------------------------


def rule_judge(
    query: str,
    steps: Sequence[Mapping[str, Any]],
    final_answer: str | None,
    *,
    answer: str | None = None,
    gold_calls: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The rule-based judge: :func:`contribution` and :func:`task_status`.

    >>> steps = [{"name": "get_city", "arguments": {"city": "Oslo"}, "ok": True, "output": {"population": 709037}}]
    >>> rule_judge("How many people live in Oslo?", steps, "709,037 people.", answer="709037")
    {'contribution': [1.0], 'task_status': 1.0}
    """
    return {
        "contribution": contribution(steps, final_answer, gold_calls, query=query),
        "task_status": task_status(final_answer, answer=answer, steps=steps),
    }


def _keywords(fn: Callable[..., Any]) -> frozenset[str] | None:
    """The keyword parameters ``fn`` accepts, or None when it takes ``**kwargs``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return frozenset()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind is not p.POSITIONAL_ONLY)


_cached_keywords = functools.lru_cache(maxsize=256)(_keywords)


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        keywords = _cached_keywords(fn)
    except TypeError:  # an unhashable callable object
        keywords = _keywords(fn)
    return keywords is None or name in keywords


def run_judge(
    judge: Judge,
    query: str,
    steps: Sequence[Mapping[str, Any]],
    final_answer: str | None,
    *,
    answer: str | None = None,
    gold_calls: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Call ``judge``, passing ``answer`` and ``gold_calls`` only if it accepts them, and check its reply.

    Returns ``{"contribution": [float in [0, 1] per step], "task_status": float in [0, 1]}``.

    Raises:
        ValueError: The judge's reply is not such a mapping (wrong keys, one contribution per
            step missing, values not numbers).
    """
    kwargs: dict[str, Any] = {}
    if _accepts(judge, "answer"):
        kwargs["answer"] = answer
    if _accepts(judge, "gold_calls"):
        kwargs["gold_calls"] = gold_calls
    result = judge(query, steps, final_answer, **kwargs)
    if not isinstance(result, Mapping) or "contribution" not in result or "task_status" not in result:
        raise ValueError(
            "Expected the judge to return a mapping with 'contribution' and 'task_status', "
            f"got {result!r:.200}."
        )
    values = list(result["contribution"])
    if len(values) != len(steps):
        raise ValueError(f"Expected the judge to return one contribution per step ({len(steps)}), got {len(values)}.")
    try:
        contributions = [min(1.0, max(0.0, float(v))) for v in values]
        status = parse_task_status(result["task_status"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"Expected numbers from the judge, got {result!r:.200} ({e}).") from None
    return {"contribution": contributions, "task_status": status}


def format_steps(steps: Sequence[Mapping[str, Any]]) -> str:
    """The intermediate steps as the annotation prompt shows them: ``Step k: {name, arguments, response}``.

    >>> print(format_steps([{"name": "get_city", "arguments": {"city": "Oslo"}, "output": {"country": "Norway"}}]))
    Step 1: {"name": "get_city", "arguments": {"city": "Oslo"}, "response": {"country": "Norway"}}
    """
    lines = []
    for k, step in enumerate(steps, 1):
        shown = {"name": step.get("name", ""), "arguments": _arguments(step), "response": _output(step)}
        lines.append(f"Step {k}: {json.dumps(shown, ensure_ascii=False, default=str)}")
    return "\n".join(lines) if lines else "(no intermediate steps)"


def parse_judge_reply(text: str, num_steps: int) -> dict[str, Any]:
    """Read an LLM judge's reply to :data:`STEPTOOL_JUDGE_PROMPT`.

    Takes the JSON object between the first ``{`` and the last ``}``; per-step lists are cut or
    padded with 0 to ``num_steps``; contributions are divided by 5.

    >>> reply = 'Sure. {"succeed_tool_calling": [1, 0], "contribution_to_final_answer": [5, 1], "final_answer_status": "Unsure"}'
    >>> parse_judge_reply(reply, 2)
    {'call_succeeded': [1.0, 0.0], 'contribution': [1.0, 0.2], 'task_status': 0.5}

    Raises:
        ValueError: The reply holds no JSON object with a ``final_answer_status``.
    """
    start, end = text.find("{"), text.rfind("}")
    try:
        obj = json.loads(text[start : end + 1]) if 0 <= start < end else None
    except ValueError:
        obj = None
    if not isinstance(obj, dict) or "final_answer_status" not in obj:
        raise ValueError(f"Expected a JSON object with 'final_answer_status' in the judge's reply, got {text!r:.200}.")

    def per_step(key: str, scale: float) -> list[float]:
        raw = obj.get(key) or []
        values = [min(1.0, max(0.0, float(v) / scale)) if isinstance(v, (int, float)) else 0.0 for v in raw]
        return (values + [0.0] * num_steps)[:num_steps]

    return {
        "call_succeeded": per_step("succeed_tool_calling", 1.0),
        "contribution": per_step("contribution_to_final_answer", 5.0),
        "task_status": parse_task_status(obj["final_answer_status"]),
    }


def llm_judge(generate: Callable[[str], str], *, prompt: str = STEPTOOL_JUDGE_PROMPT) -> Judge:
    """A :data:`Judge` that asks a language model, through ``generate(prompt) -> reply``, with StepTool's prompt.

    ``generate`` is any text generator (an API client, a local model); nothing here calls a network.

    >>> judge = llm_judge(lambda p: '{"succeed_tool_calling": [1], "contribution_to_final_answer": [4], '
    ...                             '"final_answer_status": "Solved"}')
    >>> judge("How many people live in Oslo?", [{"name": "get_city", "output": "{}"}], "709037")["contribution"]
    [0.8]
    """

    def judge(query: str, steps: Sequence[Mapping[str, Any]], final_answer: str | None) -> dict[str, Any]:
        text = (
            prompt.replace("{query}", query)
            .replace("{mid_steps}", format_steps(steps))
            .replace("{final_answer}", final_answer if final_answer is not None else "(no final answer)")
        )
        return parse_judge_reply(generate(text), len(steps))

    return judge


# ---------------------------------------------------------------------------------------------
# StepTool's annotated trajectories
# ---------------------------------------------------------------------------------------------


def _literal(text: str, prefix: str) -> dict[str, Any]:
    """A ``"Step 3: {'name': ...}"`` / ``"Final step: {...}"`` string as a dict (Python literal syntax)."""
    body = re.sub(rf"^\s*{prefix}\s*\d*\s*:\s*", "", text, count=1)
    try:
        value = ast.literal_eval(body)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        m = re.search(r"'name':\s*'([^']*)'", body)
        return {"name": m.group(1) if m else "", "arguments": {}, "response": body}
    return value if isinstance(value, dict) else {"name": "", "arguments": {}, "response": body}


def _finish_answer(arguments: Any) -> str | None:
    args = _maybe_json(arguments) if isinstance(arguments, str) else arguments
    if not isinstance(args, dict):
        return None
    if args.get("return_type", "give_answer") != "give_answer":
        return None
    answer = args.get("final_answer")
    return str(answer) if answer is not None else None


def _step(message: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": message.get("name", ""), "arguments": _arguments(message), "output": message.get("response", "")}


def _from_annotation(qid: str, item: Mapping[str, Any]) -> dict[str, Any]:
    steps = [_step(_literal(s, "Step")) for s in item.get("answer_steps", [])]
    final = _literal(item["final_step"], "Final step") if item.get("final_step") else {}
    annotations = []
    rewards = item.get("process_reward", {}) or {}
    solved = item.get("is_solved", {}) or {}
    for key in sorted(rewards, key=str):
        ann = rewards[key]
        pad = [0.0] * len(steps)
        succ = ([float(v) for v in ann.get("succeed_tool_calling", [])] + pad)[: len(steps)]
        contrib = ([min(1.0, max(0.0, float(v) / 5.0)) for v in ann.get("contributions", [])] + pad)[: len(steps)]
        annotations.append({
            "call_succeeded": succ,
            "contribution": contrib,
            "task_status": parse_task_status(solved.get(key, solved.get(str(key), "Unsolved"))),
        })
    return {
        "id": str(qid),
        "query": item.get("query", ""),
        "tool_names": list(item.get("tool_names", [])),
        "steps": steps,
        "final_answer": _finish_answer(final.get("arguments")) if final else None,
        "annotations": annotations,
    }


def _from_converted(qid: str, item: Mapping[str, Any]) -> dict[str, Any]:
    answer = item.get("answer", {}) or {}
    messages: list[Mapping[str, Any]] = []
    details = answer.get("answer_details") or []
    node: Any = details[0] if details else None
    while isinstance(node, Mapping):
        if node.get("role") == "tool" and isinstance(node.get("message"), Mapping):
            messages.append(node["message"])
        children = node.get("next") or []
        node = children[0] if children else None
    finish = [m for m in messages if str(m.get("name", "")).casefold() == "finish"]
    final = _finish_answer(answer.get("final_answer")) if answer.get("final_answer") else None
    if final is None and finish:
        final = _finish_answer(finish[-1].get("arguments"))
    tools = [t.get("function", t).get("name", "") for t in item.get("available_tools", []) if isinstance(t, Mapping)]
    return {
        "id": str(qid),
        "query": item.get("query", ""),
        "tool_names": tools,
        "steps": [_step(m) for m in messages if str(m.get("name", "")).casefold() != "finish"],
        "final_answer": final,
        "annotations": [],
    }


def load_steptool_annotations(path: str | Path) -> list[dict[str, Any]]:
    """Read trajectories stored in StepTool's formats as plain records.

    Two layouts are read (a JSON object keyed by query id):

    - the annotation output of ``src/reward/annotation_with_gpt.py``
      (``data/reward_annotation/*.json``): ``query``, ``tool_names``, ``answer_steps``
      (``"Step k: {'name', 'arguments', 'response'}"`` strings), ``final_step``
      (``"Final step: {'name': 'Finish', 'arguments': ...}"``), ``process_reward``
      (per evaluation run: ``succeed_tool_calling`` and ``contributions`` 0-5) and
      ``is_solved`` (per run: ``"AnswerStatus.Solved"``...);
    - the converted model predictions it annotates (``data/model_predictions_converted/*.json``):
      ``query``, ``available_tools`` and ``answer`` with ``final_answer`` and the
      ``answer_details`` tree of tool messages.

    Returns:
        One record per query: ``id``, ``query``, ``tool_names``, ``steps`` (step dicts with
        ``name``, ``arguments``, ``output``), ``final_answer`` (``None`` when the model gave up)
        and ``annotations``: per evaluation run ``call_succeeded``, ``contribution`` (0-5
        divided by 5) and ``task_status`` (1 / 0.5 / 0).

    Raises:
        ValueError: The file is not a JSON object of trajectories.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"Expected a JSON object keyed by query id in {path}, got {type(data).__name__}.")
    records = []
    for qid, item in data.items():
        if not isinstance(item, Mapping):
            raise ValueError(f"Expected each entry of {path} to be an object, got {type(item).__name__} for {qid!r}.")
        records.append(_from_annotation(qid, item) if "answer_steps" in item else _from_converted(qid, item))
    return records


def rescore(records: Sequence[Mapping[str, Any]], judge: Judge = rule_judge) -> list[dict[str, Any]]:
    """Judge stored trajectories again, e.g. with the rule judge instead of GPT-4.

    Each record (as :func:`load_steptool_annotations` returns) comes back as a copy with
    ``call_succeeded`` (from the outputs), ``contribution`` and ``task_status`` (from the judge)
    and ``step_terms`` (:func:`steptool_step_terms`, ready for :func:`step_rewards`). A
    record's gold ``answer`` and ``gold_calls``, if present, go to judges that accept them.

    >>> record = {"query": "Population of Oslo?", "final_answer": "709037",
    ...           "steps": [{"name": "get_city", "arguments": '{"city": "Oslo"}', "response": '{"error": "", "response": {"population": 709037}}'}]}
    >>> rescore([record])[0]["step_terms"]
    [{'call_succeeded': 1.0, 'contribution': 1.0}, {'task_status': 0.5}]
    """
    out = []
    for record in records:
        steps = list(record.get("steps", []))
        judged = run_judge(judge, record.get("query", ""), steps, record.get("final_answer"),
                           answer=record.get("answer"), gold_calls=record.get("gold_calls"))
        succeeded = [call_succeeded(s) for s in steps]
        out.append({
            **record,
            "call_succeeded": succeeded,
            "contribution": judged["contribution"],
            "task_status": judged["task_status"],
            "step_terms": steptool_step_terms(succeeded, judged["contribution"], judged["task_status"]),
        })
    return out
