"""STE's evaluation: does the model's first action call the right API with the right arguments?

For each held-out query (:class:`toolenv.datasets.ste.CallTest`) the model sees the ReAct prompt
with the offered APIs (the same system prompt as exploration and the fine-tuning data), optionally
preceded by in-context demonstrations, and writes its first action. STE's metrics:

- **well-formed %**: the first action follows the format (a parsable ``Action`` / ``Action Input``,
  or a ``Final Answer`` where no call is expected);
- **API match %**: the first action names the right API;
- **correct %**: the first action's API and arguments match the ground truth, judged by BFCL's AST
  checker (:func:`toolenv.envs.bfcl.ast_check`);

plus **end-to-end success**: tests that name an env (``env_id`` and ``index``) are played to the end
in that env by the same chat model, and the env's own ``info["success"]`` is counted.

Everything goes through the :class:`~agents.ste.chat.ChatModel` interface, so a local model, vLLM
and an OpenAI-compatible endpoint are evaluated by the same code.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from agents.ste.chat import ChatModel
from toolenv.datasets.ste import CallTest
from toolenv.envs.bfcl import BFCLTool
from toolenv.protocols.react import ReactProtocol

__all__ = [
    "CallResult",
    "Demonstrations",
    "call_metrics",
    "evaluate_calls",
    "evaluate_end_to_end",
    "first_call_prompt",
    "score_first_action",
]

logger = logging.getLogger(__name__)

Message = dict[str, str]
# Maps a test query to the explored examples shown with it (e.g. ``Retriever(...).nearest``).
Demonstrations = Callable[[str], Sequence[dict[str, Any]]]

_PROTOCOL = ReactProtocol()


@dataclass
class CallResult:
    """How one first action fared on one test."""

    test_id: str
    api: str  # the gold API ("" for a test where no call is expected)
    text: str
    well_formed: bool
    api_match: bool
    correct: bool
    called: str | None = None
    error: str | None = None


def _tools(test: CallTest) -> list[BFCLTool]:
    """The offered APIs as described (not executable) tools, for the prompt and the parser."""
    return [BFCLTool(doc) for doc in test.functions]


def first_call_prompt(test: CallTest, examples: Sequence[dict[str, Any]] = (), *, layout: str = "system") -> list[Message]:
    """The conversation the model answers: the ReAct system prompt, in-context examples, the query.

    The system prompt is the one the Explore env and the fine-tuning data show
    (``ReactProtocol().instructions(tools)``); ``examples`` are laid out by
    :func:`agents.ste.retrieval.icl_prompt` (``layout``: ``"system"`` or ``"chat"``).
    """
    from agents.ste.retrieval import icl_prompt

    return icl_prompt(test.query, examples, system=_PROTOCOL.instructions(_tools(test)), layout=layout)


def score_first_action(test: CallTest, text: str) -> CallResult:
    """Score the model's first action on ``test`` (never raises on any text).

    The action is parsed with the ReAct protocol; an unparsable one is not well-formed. A final
    answer is a well-formed action with no call. The call, if any, is judged by
    :meth:`CallTest.check` (BFCL's AST checker): API match when it names the gold API, correct
    when its arguments pass too; a test with no gold call (BFCL's irrelevance) is right when the
    model answers without calling.
    """
    names = {d["name"] for d in test.functions}
    action = _PROTOCOL.parse(text, names)
    api = test.gold_name or ""
    if action.kind == "invalid":
        return CallResult(test.id, api, text, False, False, False, error=action.error)
    calls = list(action.calls)
    if any(c.positional is not None for c in calls):  # ReAct input that is not a JSON object: no arguments to judge
        called = calls[0].name
        return CallResult(test.id, api, text, True, called == api, False, called=called, error="Action Input is not a JSON object")
    verdict = test.check(calls)
    error = None if verdict["valid"] else ("; ".join(str(e) for e in verdict.get("error", []))[:500] or verdict.get("error_type"))
    return CallResult(test.id, api, text, True, bool(verdict["api_match"]), bool(verdict["valid"]),
                      called=calls[0].name if calls else None, error=error)


def call_metrics(results: Sequence[CallResult]) -> dict[str, float]:
    """Percentages over the results: ``well_formed``, ``api_match``, ``correct``, and ``n``.

    >>> r = [CallResult("a", "f", "", True, True, False), CallResult("b", "f", "", True, False, False)]
    >>> call_metrics(r)
    {'well_formed': 100.0, 'api_match': 50.0, 'correct': 0.0, 'n': 2.0}
    """
    n = len(results)
    if n == 0:
        return {"well_formed": float("nan"), "api_match": float("nan"), "correct": float("nan"), "n": 0.0}
    return {
        "well_formed": 100.0 * sum(r.well_formed for r in results) / n,
        "api_match": 100.0 * sum(r.api_match for r in results) / n,
        "correct": 100.0 * sum(r.correct for r in results) / n,
        "n": float(n),
    }


def evaluate_calls(
    model: ChatModel,
    tests: Sequence[CallTest],
    *,
    demonstrations: Demonstrations | None = None,
    layout: str = "system",
    max_new_tokens: int = 96,
) -> dict[str, Any]:
    """First-action metrics of ``model`` over ``tests`` (greedy), overall and per API.

    Returns ``{"metrics": {...}, "per_api": {api: {...}}, "results": [CallResult as dict, ...]}``.
    """
    conversations = [first_call_prompt(t, demonstrations(t.query) if demonstrations else (), layout=layout) for t in tests]
    replies = model.chat(conversations, max_new_tokens=max_new_tokens, temperature=0.0, stop=_PROTOCOL.stop)
    results = [score_first_action(t, text) for t, text in zip(tests, replies)]
    by_api: dict[str, list[CallResult]] = defaultdict(list)
    for r in results:
        by_api[r.api].append(r)
    return {
        "metrics": call_metrics(results),
        "per_api": {api: call_metrics(rs) for api, rs in sorted(by_api.items())},
        "results": [asdict(r) for r in results],
    }


def evaluate_end_to_end(
    model: ChatModel,
    tests: Sequence[CallTest],
    *,
    demonstrations: Demonstrations | None = None,
    layout: str = "system",
    protocol: str | None = "react",
    max_new_tokens: int = 96,
    max_turns: int = 8,
) -> dict[str, Any]:
    """Play each test that names an env to the end with ``model`` (greedy); count the env's successes.

    The episodes run side by side: each turn, the conversations of the unfinished episodes (the
    env's own messages, with the retrieved examples laid out as in :func:`first_call_prompt`) go to
    ``model.chat`` in one batch, and each reply is the env's next action. ``protocol`` (default
    ``"react"``, the format of exploration and of the fine-tuning data) is passed to every env;
    ``None`` keeps each test's own ``env_kwargs``.

    Returns ``{"success": %, "n": episodes, "episodes": [{"test_id", "success", "turns"}, ...]}``.
    """
    import gymnasium as gym

    import toolenv  # noqa: F401  (registers the env ids)

    playable = [t for t in tests if t.env_id is not None]
    extra = {} if protocol is None else {"protocol": protocol}
    envs = [gym.make(t.env_id, **{**dict(t.env_kwargs), **extra}) for t in playable]  # type: ignore[arg-type]
    demos = [list(demonstrations(t.query)) if demonstrations else [] for t in playable]
    from agents.ste.retrieval import icl_prompt

    done = [False] * len(playable)
    success = [False] * len(playable)
    turns = [0] * len(playable)
    for env, t in zip(envs, playable):
        env.reset(options={"index": t.index} if t.index is not None else None)
    stop = tuple(envs[0].unwrapped.protocol.stop) if envs else ()  # type: ignore[attr-defined]
    for _ in range(max_turns):
        live = [i for i in range(len(playable)) if not done[i]]
        if not live:
            break
        conversations = []
        for i in live:
            messages = [{"role": m["role"], "content": str(m.get("content") or "")} for m in envs[i].unwrapped.messages]  # type: ignore[attr-defined]
            head = icl_prompt(messages[1]["content"], demos[i], system=messages[0]["content"], layout=layout)
            conversations.append([*head, *messages[2:]])
        replies = model.chat(conversations, max_new_tokens=max_new_tokens, temperature=0.0, stop=stop)
        for i, text in zip(live, replies):
            _, _, terminated, truncated, info = envs[i].step(text)
            turns[i] += 1
            if terminated or truncated:
                done[i] = True
                success[i] = bool(info.get("success"))
    for env in envs:
        env.close()
    n = len(playable)
    return {
        "success": 100.0 * sum(success) / n if n else float("nan"),
        "n": float(n),
        "episodes": [{"test_id": t.id, "success": s, "turns": k} for t, s, k in zip(playable, success, turns)],
    }
