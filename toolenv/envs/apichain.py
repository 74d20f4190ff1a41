"""StepTool-style multi-step API use: chains of 2-5 dependent calls, rewarded step by step."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from rewards.steps import Judge, calls_match, rule_judge, run_judge, step_rewards
from toolenv.core import BASE_REWARD_WEIGHTS, ToolEnv
from toolenv.datasets.apichain import apichain_tasks
from toolenv.protocols import Protocol
from toolenv.tools.apis import API_TOOLS
from toolenv.tools.base import Tool, ToolArgumentError, ToolResult, did_you_mean
from toolenv.types import ToolCall

__all__ = ["APICHAIN_INSTRUCTION", "APICHAIN_REWARD_WEIGHTS", "APIChainEnv"]

#: The instruction put before each question.
APICHAIN_INSTRUCTION = (
    "Answer the question with the tools. Call them one at a time; later calls usually need values "
    "that earlier calls returned. When you know the answer, reply with the final number."
)

#: Terms and default weights: StepTool's intermediate step reward is ``(SuccCalling + Contribution/5) / 2``
#: averaged over its annotation runs, i.e. equal weights 1/2 and 1/2 with Contribution on 0-1, and
#: ``IsSolved`` (task_status) with weight 1 on the final step (derivation: docs/fidelity.md).
APICHAIN_REWARD_WEIGHTS: Mapping[str, float] = {
    **BASE_REWARD_WEIGHTS,
    "answer_correct": 0.0,
    "call_succeeded": 1 / 2,
    "contribution": 1 / 2,
    "task_status": 1.0,
}


class APIChainEnv(ToolEnv):
    """Questions answered by chains of dependent API calls, with StepTool's step-grained rewards.

    ## Description

    Each episode is one question about a small fixed world — a company's employees and
    departments, cities, countries, currencies, a product catalogue, a weather table — that
    takes 2-5 calls where later calls use what earlier ones returned: ``find_employee`` names
    a department, ``get_department`` gives its manager, ``find_employee`` the manager's salary
    and currency, ``get_exchange_rate`` a rate, the ``calculator`` the product. The tools are
    the deterministic APIs of :mod:`toolenv.tools.apis` (no files, no network). Every answer is
    a number; tasks come from :class:`~toolenv.datasets.apichain.APIChainTasks` (levels 1-4,
    generated on the fly) with a gold call sequence and answer. Rewards follow StepTool (Yu et
    al. 2024): every call is rewarded for succeeding and for contributing to the answer, the
    answer for solving the task; per-step rewards recomputed in hindsight come with the last
    step for step-level learners.

    ## Action Space

    ``ToolAction(16384)``: any string of at most 16,384 characters in the env's protocol, or the same
    calls already parsed (an OpenAI assistant message or a list of ``{"name", "arguments"}``; see
    :mod:`toolenv.protocols.structured`). The text forms:

    - ``"json"`` (default): ``<tool_call>{"name": "get_city", "arguments": {"city": "Paris"}}</tool_call>``
      (several tags make parallel calls); text without a tag is the answer;
    - ``"react"``: ``Action: get_city`` / ``Action Input: {"city": "Paris"}`` or ``Final Answer: ...``;
    - ``"trice"``: ``get_city(Paris)`` — one positional input, so only one-argument tools
      (``find_employee``, ``get_department``, ``get_city``, ``get_country``,
      ``lookup_product``, ``calculator``) can be called; use ``json`` or ``react`` here.

    A malformed action (no parse, unknown tool, bad arguments, empty, too long) is never an
    exception: the observation says what was wrong and the ``format_error`` term is 1. A call
    with an unknown key (``get_city("Pariss")``) is well-formed but fails; its observation is
    the error with a "Did you mean 'Paris'?".

    ## Observation Space

    ``AnyText(16384)``. After ``reset``: the system prompt (protocol and tool schemas) and the
    user message (instruction and question). After a call: the API's JSON output or error.
    After an answer: ``""``. ``env.unwrapped.messages`` and ``env.unwrapped.tool_schemas``
    give the chat form.

    ## Rewards

    ``reward = Σ weight × term``; ``info["reward_terms"]`` holds the weighted terms,
    ``info["reward_raw"]`` the raw ones. Terms (default weight):

    - ``call_succeeded`` (1/2): 1 when every call of the step ran without error — StepTool's SuccCalling;
    - ``contribution`` (1/2): at each step, the number of the step's successful calls that match
      a not-yet-matched gold call (what is known then); in hindsight, see below;
    - ``task_status`` (1.0): on the answer step, the judge's IsSolved: 1 solved, 0.5 unsure,
      0 unsolved (:func:`rewards.steps.task_status` for the rule judge);
    - ``format_error`` (−0.1), ``answer_correct`` (0: task_status replaces it),
      ``call_wellformed`` (0), ``step_cost`` (0): as in every toolenv env.

    The weights are re-derived from StepTool's released training data
    (``data_train/{qwen2,llama3-1,toolllama}/step_grained_for_ppo_example.csv``): all 71
    intermediate step rewards there are multiples of 1/30 (only 41 are multiples of 1/6), which
    is what ``(SuccCalling + Contribution/5) / 2`` averaged over StepTool's 3 annotation runs
    gives (``data/reward_annotation/*`` holds 3 runs per trajectory); with Contribution on 0-1
    that is weights 1/2 and 1/2 (``docs/fidelity.md`` has the check). The final step gets
    IsSolved with weight 1. As in StepTool, a successful but useless call still earns 1/2, so
    calling a useless tool until the step limit pays more than solving; for online RL,
    ``reward_weights={"step_cost": -1.0}`` (what ``toolenv bench steptool`` trains with: twice
    the call reward) makes such a call cost 1/2 and the spam worth less than a wrong answer
    (:func:`benchmarks.steptool.run_env_kwargs` has the arithmetic).

    When the episode terminates, ``info`` also holds the *hindsight* terms:
    ``info["step_reward_terms"]``, one dict of raw terms per step of the episode in which
    ``contribution`` is the judge's (the rule judge gives a call 1 when a value it returned is
    used by a later call's arguments or in the answer, or when it matches a gold call;
    :func:`rewards.steps.contribution`; a step with parallel calls sums them) and
    ``task_status`` is set on the answer step only; and ``info["step_rewards"]``, their
    weighted sums (StepTool's paper reading). StepTool's code weighting is
    ``rewards.steps.step_rewards(info["step_reward_terms"], env.unwrapped.reward_weights,
    steptool_code_weights=True)``. A step that repeats an earlier successful call contributes
    0 (the first call keeps the credit). After a truncation, ``env.unwrapped.end_info()`` (or
    ``hindsight()``, at any point) gives the same, judged with no answer (task_status 0);
    :func:`agents.rollout.rollout` puts it in a truncated episode's last step info.

    ## Episode End

    Terminates when the model answers. Truncates after ``max_episode_steps`` (8, set at
    registration) through ``TimeLimit``. Success (``info["success"]``) is task_status 1.

    ## Arguments

    - ``split``: ``"train"`` (10,000 tasks) or ``"test"`` (1,000 held-out questions).
    - ``level``: 1-4, or ``None`` to mix; ``size`` overrides the number of tasks.
    - ``tools``: names of the tools to offer (default all ten); they must include the tools the
      level's gold solutions use (:data:`toolenv.datasets.apichain.LEVEL_TOOLS`).
    - ``judge``: a :data:`rewards.steps.Judge` for the hindsight contribution and the task
      status (default :func:`rewards.steps.rule_judge`); judges that accept ``answer`` and
      ``gold_calls`` keywords get the gold answer and calls. ``"chat:MODEL"`` asks a local chat
      model StepTool's annotation prompt (:func:`rewards.steps.llm_judge`), so pass rate
      (``success``: the judge says Solved) is the LLM judge's (``--kw judge=chat:MODEL``).
    - ``protocol`` (default ``"json"``), ``reward_weights``, ``answer_reward``, ``tool_timeout``,
      ``max_output_chars``, ``render_mode``: see :class:`toolenv.core.ToolEnv`.

    ## Registered Configurations

    - ``toolenv/APIChain-v1``: train split, levels mixed, all tools.
    - ``toolenv/APIChain-Test-v1``: held-out split, levels mixed, all tools.
    - ``toolenv/APIChain-L1-v1``, ``toolenv/APIChain-L1-Test-v1``: level 1 only (two calls,
      three question templates) with only its three tools — the learning test for small models.

    Other levels: ``gym.make("toolenv/APIChain-v1", level=3)``.

    ## Version History

    - v1: default weights re-derived from StepTool's released rewards (call_succeeded 1/2,
      contribution 1/2; were 1/6 and 5/6); a repeated successful call contributes 0 in
      hindsight.
    - v0: initial version (``gym.make`` of a v0 id points to v1).

    ## Example

    >>> import gymnasium as gym, toolenv
    >>> env = gym.make("toolenv/APIChain-L1-v1")
    >>> obs, info = env.reset(seed=0)
    >>> for action in env.unwrapped.gold_actions():  # the expert: gold calls, then the answer
    ...     obs, reward, terminated, truncated, info = env.step(action)
    >>> terminated, info["success"], info["step_rewards"]
    (True, True, [1.0, 1.0, 1.0])
    """

    reward_weights_defaults: ClassVar[Mapping[str, float]] = APICHAIN_REWARD_WEIGHTS

    def __init__(
        self,
        split: str = "train",
        *,
        level: int | None = None,
        size: int | None = None,
        tools: Sequence[str] | None = None,
        judge: Judge | str | None = None,
        protocol: str | Protocol = "json",
        reward_weights: Mapping[str, float] | None = None,
        answer_reward: Callable[..., list[float]] | None = None,
        tool_timeout: float = 1.0,
        max_output_chars: int = 2_000,
        render_mode: str | None = None,
    ) -> None:
        tasks = apichain_tasks(split, level, size)
        names = list(API_TOOLS) if tools is None else list(tools)
        for name in names:
            if name not in API_TOOLS:
                raise ValueError(
                    f"Unknown tool {name!r} in tools: expected names from {list(API_TOOLS)}.{did_you_mean(str(name), API_TOOLS)}"
                )
        missing = [t for t in tasks.tool_names if t not in names]
        if missing:
            raise ValueError(f"Expected tools to include {missing}, which the gold solutions of {tasks.name} use.")
        if isinstance(judge, str):  # "chat:MODEL": StepTool's annotation prompt answered by a local chat model
            from rewards.steps import llm_judge
            from toolenv.tools.models import model_backend

            judge = llm_judge(model_backend(judge, setting="judge", instruction="", allowed=("chat",), max_new_tokens=256))
        if judge is not None and not callable(judge):
            raise TypeError(f"Expected judge to be 'chat:MODEL' or a callable (query, steps, final_answer) -> dict, got {judge!r}.")
        super().__init__(
            tasks,
            [API_TOOLS[n] for n in names],
            protocol=protocol,
            instruction=APICHAIN_INSTRUCTION,
            reward_weights=reward_weights,
            answer_reward=answer_reward,
            tool_timeout=tool_timeout,
            max_output_chars=max_output_chars,
            render_mode=render_mode,
        )
        self.judge: Judge = rule_judge if judge is None else judge
        self.split = split
        self.level = level
        self._gold_left: list[dict[str, Any]] = []
        self._judged: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"APIChainEnv(split={self.split!r}, level={self.level!r}, protocol={self.protocol.name!r})"

    # ----------------------------------------------------------------- hooks
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode; see :meth:`toolenv.core.ToolEnv.reset`."""
        obs, info = super().reset(seed=seed, options=options)
        assert self.task is not None
        self._gold_left = [c.to_dict() for c in self.task.solution]
        self._judged = None
        return obs, info

    def _call_terms(self, call: ToolCall, result: ToolResult) -> dict[str, float]:
        """Immediate contribution: 1 for a successful call that matches a gold call not matched yet."""
        if not result.ok:
            return {}
        step = self._step_dict(call.to_dict(), result.output, True)
        for j, gold in enumerate(self._gold_left):
            if calls_match(step, gold):
                del self._gold_left[j]
                return {"contribution": 1.0}
        return {}

    def _score_answer(self, answer: str) -> dict[str, float]:
        terms = super()._score_answer(answer)
        self._judged = self._judge(answer)
        terms["task_status"] = self._judged["task_status"]
        return terms

    def _is_success(self, raw: dict[str, float]) -> bool:
        return raw.get("task_status", 0.0) >= 1.0

    def _episode_end_info(self) -> dict[str, Any]:
        return self.hindsight()

    # ------------------------------------------------------------ public API
    def hindsight(self) -> dict[str, Any]:
        """The episode's per-step terms and rewards recomputed in hindsight with the judge.

        Returns ``{"step_reward_terms": [raw terms per step], "step_rewards": [weighted sum per step]}``
        for the steps taken so far; an episode without an answer (e.g. truncated) is judged with
        no final answer.
        """
        judged = self._judged if self._judged is not None else self._judge(None)
        contributions = judged["contribution"]
        terms: list[dict[str, float]] = []
        k = 0
        for record in self.history:
            raw = dict(record["raw"])
            n = len(record["calls"]) if record["kind"] == "call" else 0
            raw["contribution"] = float(sum(contributions[k : k + n]))
            k += n
            raw["task_status"] = judged["task_status"] if record["kind"] == "answer" else 0.0
            terms.append(raw)
        return {"step_reward_terms": terms, "step_rewards": step_rewards(terms, self.reward_weights)}

    # -------------------------------------------------------------- internals
    def _step_dict(self, call: Mapping[str, Any], output: str, ok: bool) -> dict[str, Any]:
        """A call as a :mod:`rewards.steps` step; a positional input is bound to its parameter."""
        arguments: Any = call.get("arguments", {})
        tool: Tool | None = self.tools.get(call.get("name", ""))
        if tool is not None:
            try:
                arguments = tool.bind(ToolCall(call["name"], arguments, call.get("positional")))
            except ToolArgumentError:
                pass
        return {"name": call.get("name", ""), "arguments": arguments, "output": output, "ok": ok}

    def _judge(self, final_answer: str | None) -> dict[str, Any]:
        assert self.task is not None
        steps = [
            self._step_dict(call, output, ok)
            for record in self.history
            if record["kind"] == "call"
            for call, output, ok in zip(record["calls"], record["outputs"], record["ok"])
        ]
        return run_judge(
            self.judge,
            self.task.question,
            steps,
            final_answer,
            answer=self.task.answer,
            gold_calls=[c.to_dict() for c in self.task.solution],
        )
