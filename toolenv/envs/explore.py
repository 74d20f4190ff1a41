"""STE's exploration episodes: try an imagined query against the real tools of an API pool."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import gymnasium as gym

from toolenv.core import BASE_REWARD_WEIGHTS, ToolEnv, truncate
from toolenv.datasets.base import ListTaskSet
from toolenv.protocols import Protocol
from toolenv.spaces import AnyText
from toolenv.tools.base import Tool, ToolResult
from toolenv.tools.pool import Api, api_pool, make_tools
from toolenv.types import Task, ToolCall

__all__ = ["EXPLORE_INSTRUCTION", "EXPLORE_MAX_OBSERVATION_CHARS", "EXPLORE_REWARD_WEIGHTS", "ExploreEnv",
           "explore_tasks"]

#: The instruction put before each query.
EXPLORE_INSTRUCTION = (
    "Fulfil the user's query with the tools. Call them as needed, one at a time, and read what they "
    "return; then give a final answer that answers the query."
)

#: Longest observation: the system prompt lists every tool of the pool (a whole BFCL class, or
#: all of BFCL, is far longer than 16,384 characters).
EXPLORE_MAX_OBSERVATION_CHARS = 262_144

#: Terms and default weights: a step is rewarded for well-formed and successful calls; the
#: answer is not judged (the explorer's reflection is the verdict).
EXPLORE_REWARD_WEIGHTS: Mapping[str, float] = {
    **BASE_REWARD_WEIGHTS,
    "answer_correct": 0.0,
    "call_wellformed": 0.5,
    "call_succeeded": 0.5,
    "format_error": -0.1,
}

#: How many built-in queries an APIChain API gets (drawn from the "train" split of
#: :func:`toolenv.datasets.ste.apichain_call_tests`).
_BUILTIN_PER_API = 20


def _generic_query(api: Api) -> str:
    return (f"Show me what {api.name} can do: call it once with realistic arguments of your choice, "
            "then tell me what it returned.")


def explore_tasks(apis: Sequence[Api], *, per_api: int = _BUILTIN_PER_API) -> ListTaskSet:
    """The built-in tasks of an explore env over ``apis``.

    APIChain APIs and the calculator get up to ``per_api`` generated single-API queries with
    their gold call (the ``"train"`` split of :func:`toolenv.datasets.ste.apichain_call_tests`,
    disjoint from the held-out ``"test"`` queries used for evaluation); other APIs get one
    generic query asking to try the API.
    """
    from toolenv.datasets.ste import apichain_call_tests

    tasks: list[Task] = []
    for api in apis:
        found: list[Task] = []
        if api.source in ("apichain", "calculator"):
            for test in apichain_call_tests(per_api, split="train", apis=[api.name], multi_step=0):
                call = test.gold_call()
                found.append(Task(f"explore-{api.name}-{len(found)}", test.query, "", (call,),
                                  {"api": api.name, "source": api.source, "call_test": test.id}))
        if not found:
            found.append(Task(f"explore-{api.name}-0", _generic_query(api), "", (),
                              {"api": api.name, "source": api.source}))
        tasks.extend(found)
    return ListTaskSet(tasks, name="explore", split="train")


class ExploreEnv(ToolEnv):
    """STE's exploration: a query (imagined by the explorer) tried with the real tools of an API pool.

    ## Description

    STE (Wang et al. 2024, "LLMs in the Imaginarium") learns a tool by simulated trial and
    error: an explorer model reads an API's documentation, imagines a plausible user query,
    tries to fulfil it by calling the real API, and reflects on whether it did. This env is
    the "try" part. Its tools are any APIs of :func:`toolenv.tools.pool.api_pool` — the
    APIChain APIs, the calculator, the functions of the BFCL multi-turn classes, a user's own
    typed function. ``reset(options={"query": "..."})`` makes the episode's question the given
    query; without one, the env picks a built-in task (:func:`explore_tasks`: generated
    single-API queries with a gold call for the APIChain APIs and the calculator, a generic
    "try the API" query for the others). BFCL tools run on fresh class instances loaded with
    a default scenario at every reset, so episodes do not leak state into each other.
    ``env.unwrapped.history`` records each step's calls, outputs and per-call success.

    ## Action Space

    ``AnyText(16384)``, in the env's protocol (default ``"react"``, STE's format):
    ``Thought: ...\\nAction: get_city\\nAction Input: {"city": "Paris"}`` (the JSON between the
    first ``{`` and the last ``}``) or ``Final Answer: ...``; ``"json"`` and ``"trice"`` work
    too. A malformed action is never an exception: the observation says what was wrong and
    ``format_error`` is 1.

    ## Observation Space

    ``AnyText(262144)``. After ``reset``: the system prompt (protocol and the tools'
    signatures and descriptions) and the user message (instruction and query). After a call:
    the tool's real output or error. After the final answer: ``""``.

    ## Rewards

    ``reward = Σ weight × term`` (``info["reward_terms"]``): ``call_wellformed`` 0.5 (the
    step's calls parsed, named real tools and bound their arguments), ``call_succeeded`` 0.5
    (and ran without error), ``format_error`` −0.1; ``answer_correct`` and ``step_cost`` have
    weight 0 (the answer is not judged here). Change them with ``reward_weights={...}``.

    ## Episode End

    Terminates on a final answer. ``info["success"]`` is true when the episode ends with a
    non-empty final answer after at least one successful call — a necessary condition only;
    STE's reflection is the real verdict. Truncates after ``max_episode_steps`` (5 at
    registration: STE's ``max_turn`` of 4 calls, then the answer) through ``TimeLimit``.

    ## Arguments

    - ``apis``: pool specs (``"apichain"``, ``"apichain:get_city"``, ``"calculator"``,
      ``"bfcl:GorillaFileSystem"``, ``"bfcl:GorillaFileSystem.ls"``, ``"pkg.module:function"``),
      functions or Tools; default ``["calculator"]``.
    - ``instruction``: the text put before each query (:data:`EXPLORE_INSTRUCTION`).
    - ``protocol`` (default ``"react"``), ``reward_weights``, ``tool_timeout``,
      ``max_output_chars``, ``render_mode``: see :class:`toolenv.core.ToolEnv`.

    ## Registered Configurations

    ``toolenv/Explore-v0`` (``apis=["calculator"]``, ``protocol="react"``); other pools by kwarg,
    e.g. ``gym.make("toolenv/Explore-v0", apis=["apichain:get_city"])``.

    ## Version History

    - v0: initial version.

    ## Example

    >>> import gymnasium as gym, toolenv
    >>> env = gym.make("toolenv/Explore-v0", apis=["apichain:get_city"])
    >>> obs, info = env.reset(options={"query": "Which time zone is Lima in?"})
    >>> info["prompt"].splitlines()[-1]
    'Which time zone is Lima in?'
    >>> env.step('Thought: look it up\\nAction: get_city\\nAction Input: {"city": "Lima"}')[0]
    'Observation: {"city": "Lima", "country": "Peru", "population": 10151200, "timezone": "America/Lima", "utc_offset": -5}'
    >>> obs, reward, terminated, truncated, info = env.step("Final Answer: America/Lima (UTC-5).")
    >>> terminated, info["success"], env.unwrapped.history[0]["ok"]
    (True, True, [True])
    """

    reward_weights_defaults: ClassVar[Mapping[str, float]] = EXPLORE_REWARD_WEIGHTS

    def __init__(
        self,
        apis: Sequence[str | Callable[..., Any] | Tool] | str = ("calculator",),
        *,
        instruction: str = EXPLORE_INSTRUCTION,
        protocol: str | Protocol = "react",
        reward_weights: Mapping[str, float] | None = None,
        tool_timeout: float = 1.0,
        max_output_chars: int = 2_000,
        render_mode: str | None = None,
    ) -> None:
        pool = api_pool(apis)
        if not pool:
            raise ValueError(f"Expected at least one API in apis, got {apis!r}.")
        self.apis: list[Api] = pool
        self._tool_timeout = tool_timeout
        self._max_output_chars = max_output_chars
        super().__init__(
            explore_tasks(pool),
            make_tools(pool, timeout=tool_timeout, max_output_chars=max_output_chars),
            protocol=protocol,
            instruction=instruction,
            reward_weights=reward_weights,
            tool_timeout=tool_timeout,
            max_output_chars=max_output_chars,
            render_mode=render_mode,
        )
        self.observation_space = AnyText(EXPLORE_MAX_OBSERVATION_CHARS)
        self._stateful = any(a.bfcl_class is not None for a in pool)
        self._answer: str | None = None
        self._ok_calls = 0

    def __repr__(self) -> str:
        return f"ExploreEnv(apis={[a.name for a in self.apis]!r}, protocol={self.protocol.name!r})"

    # ------------------------------------------------------------ public API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode on ``options["query"]`` (any text), or on a built-in task.

        ``options["index"]`` / ``options["task_id"]`` pick a built-in task, as in every ToolEnv;
        without options a built-in task is sampled.
        """
        options = dict(options or {})
        query = options.pop("query", None)
        if query is not None and (not isinstance(query, str) or not query.strip()):
            raise ValueError(f"Expected options['query'] to be a non-empty string, got {query!r}.")
        if query is not None and options:
            raise ValueError(f"Expected options['query'] alone, got it with {sorted(options)}.")
        if self._stateful:  # fresh BFCL instances: no state carries over from the last episode
            self.tools = {t.name: t for t in make_tools(self.apis, timeout=self._tool_timeout,
                                                        max_output_chars=self._max_output_chars)}
        obs, info = super().reset(seed=seed, options={"index": 0} if query is not None else options)
        if query is not None:
            digest = hashlib.sha256(query.encode("utf-8", "replace")).hexdigest()[:12]
            self.task = Task(f"query-{digest}", query, "", (), {"imagined": True})
            user = self._prompt(self.task)
            self.messages[1] = {"role": "user", "content": user}
            info = {**info, "task": self.task.to_dict(), "prompt": user}
        self._answer = None
        self._ok_calls = 0
        obs = truncate(f"{self.system_prompt}\n\n{info['prompt']}", EXPLORE_MAX_OBSERVATION_CHARS)
        return obs, info

    # ----------------------------------------------------------------- hooks
    def _call_terms(self, call: ToolCall, result: ToolResult) -> dict[str, float]:
        self._ok_calls += int(result.ok)
        return {}

    def _on_answer(self, answer: str) -> tuple[dict[str, float], bool, str]:
        self._answer = answer
        return {}, True, ""

    def gold_actions(self, task: Task | None = None) -> list[str]:
        """The task's gold call (built-in tasks have one), then a final answer quoting its output.

        Exploration has no gold answer, so the answer is the text the gold calls return, run on
        fresh tools; a task without gold calls (an imagined or generic query) just answers.
        """
        task = task or self.task
        if task is None:
            raise gym.error.ResetNeeded("No task: call reset() first or pass a task.")
        tools = {t.name: t for t in make_tools(self.apis)}
        outputs = [tools[c.name](c).output if c.name in tools else "" for c in task.solution]
        answer = task.answer or (outputs[-1] if outputs else "") or "I could not use the tools for this query."
        return [self.protocol.format_call(c) for c in task.solution] + [self.protocol.format_answer(answer)]

    def _is_success(self, raw: dict[str, float]) -> bool:
        return bool(self._answer and self._answer.strip()) and self._ok_calls > 0
