"""The base environment: parse the model's text, run the tool, observe, reward.

Every toolenv task family subclasses :class:`ToolEnv` and overrides a few small hooks
(:meth:`ToolEnv._prompt`, :meth:`ToolEnv._score_answer`), as Minigrid families override
``_gen_grid`` and ``_reward``. The base class owns the episode: task sampling, protocol
parsing, tool dispatch, reward terms, chat messages and episode metrics.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import gymnasium as gym

from toolenv.datasets.base import TaskSet
from toolenv.protocols import Action, Protocol, make_protocol
from toolenv.protocols.structured import is_structured, parse_structured
from toolenv.protocols.structured import render as render_structured
from toolenv.spaces import MAX_ACTION_CHARS, MAX_OBSERVATION_CHARS, AnyText, ToolAction
from toolenv.tools.base import DEFAULT_MAX_OUTPUT_CHARS, DEFAULT_TIMEOUT_S, Tool, ToolResult, as_tool, did_you_mean
from toolenv.types import Task, ToolCall

__all__ = ["BASE_REWARD_WEIGHTS", "EnvSnapshot", "ToolEnv", "accepted_kwargs", "astep", "restore", "snapshot", "truncate", "unknown_kwarg"]

#: The reward terms of every ToolEnv and their default weights. ``reward = Σ weight × term``.
BASE_REWARD_WEIGHTS: Mapping[str, float] = {
    "answer_correct": 1.0,  # 1 when the final answer is right (0 otherwise, and on non-final steps)
    "call_wellformed": 0.0,  # 1 when the step's calls parsed, named real tools and bound their arguments
    "call_succeeded": 0.0,  # 1 when, in addition, every call ran without error
    "format_error": -0.1,  # 1 when the action was malformed: no parse, unknown tool, bad arguments
    "step_cost": 0.0,  # 1 on every step; a negative weight makes long episodes cost
}


#: A step's tool time budget, in tool time limits (``tool_timeout``): many slow calls in one action
#: cannot hold a step for longer than this many limits (plus the last call's margin).
STEP_BUDGET_CALLS = 4


@functools.cache
def accepted_kwargs(cls: type) -> frozenset[str] | None:
    """The keyword arguments ``cls(...)`` accepts, or ``None`` when its ``__init__`` takes ``**kwargs``.

    >>> from toolenv.envs.math import MathEnv
    >>> "level" in accepted_kwargs(MathEnv)
    True
    """
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def unknown_kwarg(cls: type, kwargs: Mapping[str, Any]) -> str | None:
    """Why ``cls(**kwargs)`` would fail on a kwarg name (the accepted names, a "Did you mean"), or ``None``.

    >>> from toolenv.envs.math import MathEnv
    >>> unknown_kwarg(MathEnv, {"levle": 2}).split(" Accepted")[0]
    "unknown kwarg 'levle'. Did you mean 'level'?"
    """
    accepted = accepted_kwargs(cls)
    if accepted is None:
        return None
    for key in kwargs:
        if key not in accepted:
            return f"unknown kwarg {key!r}.{did_you_mean(key, accepted)} Accepted: {', '.join(sorted(accepted))}."
    return None


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, saying so at the end."""
    if len(text) <= limit:
        return text
    note = f"... [truncated {len(text) - limit} characters]"
    return text[: max(0, limit - len(note))] + note


class ToolEnv(gym.Env[str, str]):
    """A tool-use task as a Gymnasium environment with text actions and observations.

    Subclasses give the tasks and tools and may override :meth:`_prompt`,
    :meth:`_score_answer` and :attr:`reward_weights_defaults`. See :class:`toolenv.envs.math.MathEnv`
    for the full Gymnasium docstring of a concrete family.

    Args:
        tasks: The dataset split the env samples tasks from.
        tools: Functions or :class:`~toolenv.tools.Tool` objects the model may call.
        protocol: ``"trice"``, ``"react"``, ``"json"`` or a :class:`~toolenv.protocols.Protocol`.
        instruction: The task instruction put before each question.
        reward_weights: Overrides of the default term weights; unknown names are an error.
        answer_reward: A batch reward function ``f(completions, *, answer, tool_value, **kw) -> list[float]``
            from :mod:`rewards` that scores a final answer in ``[0, 1]``.
        tool_timeout: Wall-clock limit of one tool call, in seconds.
        max_output_chars: Longest tool output the model sees.
        render_mode: ``None`` or ``"ansi"`` (a text transcript).
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 1}  # noqa: RUF012
    reward_weights_defaults: ClassVar[Mapping[str, float]] = BASE_REWARD_WEIGHTS
    #: Attributes set once in ``__init__`` that ``reset`` and ``step`` never change: :meth:`snapshot`
    #: shares them instead of copying them (the task set is the large one). A subclass whose
    #: episodes change one of them must not list it; one that adds a large constant may.
    snapshot_shared: ClassVar[frozenset[str]] = frozenset({
        "tasks", "protocol", "answer_reward", "observation_space", "action_space", "render_mode", "reward_weights",
        "instruction", "step_time_budget", "_terms", "spec", "metadata", "reward_weights_defaults",
    })

    def __init__(
        self,
        tasks: TaskSet,
        tools: Sequence[Tool | Callable[..., Any]],
        *,
        protocol: str | Protocol = "trice",
        instruction: str = "",
        reward_weights: Mapping[str, float] | None = None,
        answer_reward: Callable[..., list[float]] | None = None,
        tool_timeout: float = DEFAULT_TIMEOUT_S,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        render_mode: str | None = None,
    ) -> None:
        if len(tasks) == 0:
            raise ValueError(f"Expected a non-empty task set, got {tasks!r} with 0 tasks.")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"Unknown render_mode {render_mode!r}: expected one of {self.metadata['render_modes']} or None."
            )
        self.tasks = tasks
        self.tools: dict[str, Tool] = {}
        for t in tools:
            tool = as_tool(t, timeout=tool_timeout, max_output_chars=max_output_chars)
            if tool.name in self.tools:
                raise ValueError(f"Expected unique tool names, got {tool.name!r} twice.")
            self.tools[tool.name] = tool
        #: Wall-clock budget of all the calls of one step: calls after it is spent are not run.
        self.step_time_budget = STEP_BUDGET_CALLS * tool_timeout
        self.protocol = make_protocol(protocol)
        self.instruction = instruction
        self.reward_weights = self._check_weights(reward_weights)
        if answer_reward is None:
            from rewards.math import numeric_match

            answer_reward = numeric_match
        if not callable(answer_reward):
            raise TypeError(
                f"Expected answer_reward to be a batch reward function f(completions, *, answer, **kw) -> list[float] "
                f"(e.g. rewards.math.numeric_match), got {type(answer_reward).__name__} {answer_reward!r}."
            )
        self.answer_reward = answer_reward
        self.render_mode = render_mode
        self.observation_space = AnyText(MAX_OBSERVATION_CHARS)
        self.action_space = ToolAction(MAX_ACTION_CHARS)
        self.system_prompt = self.protocol.instructions(list(self.tools.values()))
        self._tool_names = frozenset(self.tools)
        self._terms = tuple(self.reward_weights)
        self.task: Task | None = None
        self.messages: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self._done = True

    def __new__(cls, *args: Any, **kwargs: Any) -> ToolEnv:
        # Checked before any __init__ runs (so before data is read): a misspelt kwarg names the
        # accepted ones, with a "Did you mean", instead of Python's bare TypeError.
        problem = unknown_kwarg(cls, kwargs)
        if problem is not None:
            raise TypeError(f"{cls.__name__} got an {problem}")
        return super().__new__(cls)

    # ----------------------------------------------------------------- hooks
    def _prompt(self, task: Task) -> str:
        """The user message of an episode: instruction and question."""
        return f"{self.instruction}\n{task.question}" if self.instruction else task.question

    def _score_answer(self, answer: str) -> dict[str, float]:
        """Raw reward terms for a final answer (before weighting)."""
        assert self.task is not None
        value = self._last_value
        correct = self.answer_reward([answer], answer=[self.task.answer], tool_value=[value])[0]
        return {"answer_correct": float(correct)}

    def _on_answer(self, answer: str) -> tuple[dict[str, float], bool, str]:
        """A reply without calls: ``(raw terms, terminated, observation)``.

        By default the reply is the final answer: it is scored and ends the episode. Multi-turn
        families (a new user turn after each reply) override this.
        """
        return self._score_answer(answer), True, ""

    def _is_success(self, raw: dict[str, float]) -> bool:
        """Whether the episode counts as solved after a step with these raw terms."""
        return raw.get("answer_correct", 0.0) >= 1.0

    def _call_terms(self, call: ToolCall, result: ToolResult) -> dict[str, float]:
        """Extra raw terms of one executed call (e.g. a step-level contribution); default none."""
        return {}

    def _episode_end_info(self) -> dict[str, Any]:
        """Extra ``info`` entries at the end of an episode (e.g. terms only known in hindsight)."""
        return {}

    # ------------------------------------------------------------ public API
    def end_info(self) -> dict[str, Any]:
        """End-of-episode ``info`` entries for the steps taken so far (e.g. hindsight step rewards).

        The env adds them to the info of the step that terminates the episode. A truncated
        episode (``TimeLimit``, or a rollout's own turn or token budget) gets them here:
        :func:`agents.rollout.rollout` adds them to the last step's info.
        """
        return self._episode_end_info() if self.task is not None else {}

    def snapshot(self) -> EnvSnapshot:
        """The episode's whole state — messages, history, counters, the tools' and API instances' state, the RNG.

        :meth:`restore` puts it back exactly, as often as needed: the next ``step`` gives the
        same observation, reward, termination and info as it would have at the snapshot. DFSDT
        (:mod:`agents.search`) backtracks this way. The contract is a deep copy of every
        attribute except those in :attr:`snapshot_shared`; a subclass holding something that
        cannot be deep-copied (a live connection) overrides both methods.
        """
        return EnvSnapshot(copy.deepcopy({k: v for k, v in vars(self).items() if k not in self.snapshot_shared}))

    def restore(self, snap: EnvSnapshot) -> None:
        """Return to the state :meth:`snapshot` saved (the snapshot stays usable)."""
        if not isinstance(snap, EnvSnapshot):
            raise TypeError(f"Expected an EnvSnapshot from snapshot(), got {type(snap).__name__}.")
        state = copy.deepcopy(snap.state)
        for k in [k for k in vars(self) if k not in self.snapshot_shared and k not in state]:
            delattr(self, k)
        self.__dict__.update(state)

    @property
    def tool_schemas(self) -> list[dict[str, Any]]:
        """JSON schemas of the tools, for ``tokenizer.apply_chat_template(messages, tools=...)``."""
        return [t.schema for t in self.tools.values()]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode on a sampled task, or on ``options["index"]`` / ``options["task_id"]``."""
        super().reset(seed=seed)
        self.task = self.tasks[self._pick(options or {})]
        user = self._prompt(self.task)
        self.messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": user}]
        self._done = False
        self._num_calls = 0
        self._num_errors = 0
        self._turns = 0
        self._success = False
        self._last_value: Any = None
        #: One record per step: kind, calls, outputs, per-call success, answer, raw terms.
        self.history: list[dict[str, Any]] = []
        obs = truncate(f"{self.system_prompt}\n\n{user}", MAX_OBSERVATION_CHARS)
        return obs, {"task": self.task.to_dict(), "tools": self.tool_schemas, "prompt": user}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Parse ``action``, run its calls or score its answer, and return the next observation."""
        if self.task is None or self._done:
            raise gym.error.ResetNeeded("Cannot call step() before reset() or after the episode terminated.")
        self._turns += 1
        raw = dict.fromkeys(self._terms, 0.0)
        raw["step_cost"] = 1.0
        text, parsed = self._read(action)
        info: dict[str, Any] = {"action_kind": parsed.kind, "calls": [], "tool_outputs": []}
        terminated = False
        if parsed.kind == "invalid":
            raw["format_error"] = 1.0
            self._num_errors += 1
            obs = f"Invalid action: {parsed.error}"
            info["error"] = parsed.error
            self.messages.append({"role": "assistant", "content": text})
            self.messages.append({"role": "user", "content": obs})
        elif parsed.kind == "call":
            obs = self._run_calls(parsed, text, raw, info)
        else:
            assert parsed.answer is not None
            self.messages.append({"role": "assistant", "content": text})
            answer_terms, terminated, obs = self._on_answer(parsed.answer)
            raw.update(answer_terms)
            self._success = self._is_success(raw)
            info["answer"] = parsed.answer
        self.history.append({"kind": parsed.kind, "calls": info["calls"], "outputs": info["tool_outputs"],
                             "ok": info.get("calls_ok", []), "answer": info.get("answer"), "raw": raw})
        self._done = terminated
        w = self.reward_weights
        terms = {k: w[k] * raw[k] if raw[k] else 0.0 for k in self._terms}
        reward = float(sum(terms.values()))
        info["reward_terms"] = terms
        info["reward_raw"] = raw
        info["success"] = self._success
        info["num_tool_calls"] = self._num_calls
        info["tool_used"] = self._num_calls > 0
        info["num_format_errors"] = self._num_errors
        info["turns"] = self._turns
        if terminated:
            info.update(self._episode_end_info())
        return truncate(obs, MAX_OBSERVATION_CHARS), reward, terminated, False, info

    def render(self) -> str | None:
        """The episode so far as a text transcript (``render_mode="ansi"``)."""
        if self.render_mode != "ansi":
            return None
        lines = []
        for m in self.messages:
            name = f" ({m['name']})" if "name" in m else ""
            lines.append(f"[{m['role']}{name}]\n{m['content']}")
        return "\n\n".join(lines) + "\n"

    def gold_actions(self, task: Task | None = None) -> list[str]:
        """The expert's actions for ``task`` (default: the current one) in this env's protocol.

        The gold solution's calls, then the final answer — a demonstration for behaviour cloning.
        """
        task = task or self.task
        if task is None:
            raise gym.error.ResetNeeded("No task: call reset() first or pass a task.")
        actions = [self.protocol.format_call(c) for c in task.solution]
        return actions + [self.protocol.format_answer(task.answer)]

    # -------------------------------------------------------------- internals
    def _pick(self, options: Mapping[str, Any]) -> int:
        unknown = set(options) - {"index", "task_id"}
        if unknown:
            raise ValueError(f"Unknown reset option(s) {sorted(unknown)}: expected 'index' or 'task_id'.")
        n = len(self.tasks)
        if options.get("index") is not None:
            index = options["index"]
            if not isinstance(index, int) or isinstance(index, bool) or not -n <= index < n:
                raise ValueError(f"Expected options['index'] to be an int in [0, {n}), got {index!r}.")
            return index % n
        if options.get("task_id") is not None:
            return self.tasks.index_of(str(options["task_id"]))
        return int(self.np_random.integers(n))

    def _read(self, action: Any) -> tuple[str, Action]:
        """The action's text (for the transcript) and what it asks for; structured actions are written in the env's protocol first.

        A structured action (:mod:`toolenv.protocols.structured`) is rendered as the text a model
        following the protocol would write and that text goes through :meth:`_parse`, so the step is
        the one the equivalent text gives. Calls the protocol cannot write in one action (several
        calls in a one-call protocol) run as given.
        """
        if isinstance(action, str) or not is_structured(action):
            return (action if isinstance(action, str) else ""), self._parse(action)
        given = parse_structured(action)
        text = render_structured(given, self.protocol, action)
        if given.kind == "invalid":
            return text, given
        parsed = self._parse(text)
        if given.kind == "call" and (parsed.kind != "call" or [c.name for c in parsed.calls] != [c.name for c in given.calls]):
            return text, given
        return text, parsed

    def _parse(self, action: Any) -> Action:
        if not isinstance(action, str):
            return Action.invalid(f"Expected the action as text, got {type(action).__name__}.")
        if len(action) > MAX_ACTION_CHARS:
            return Action.invalid(f"Action too long: {len(action)} characters (limit {MAX_ACTION_CHARS}).")
        if not action.strip():
            return Action.invalid("Empty action.")
        try:
            return self.protocol.parse(action, self._tool_names)
        except Exception as e:  # a protocol bug must not end a rollout; report it as feedback
            return Action.invalid(f"Could not parse the action ({type(e).__name__}).")

    def _run_calls(self, parsed: Action, text: str, raw: dict[str, float], info: dict[str, Any]) -> str:
        wellformed = succeeded = True
        outputs: list[str] = []
        tool_messages: list[dict[str, Any]] = []
        info["calls_ok"] = []
        start = time.monotonic()
        results = self._concurrent_results(parsed.calls)
        for k, call in enumerate(parsed.calls):
            if results is not None:
                result = results[k]
            elif time.monotonic() - start > self.step_time_budget:
                result = ToolResult(False, f"Error: {call.name} was not run: this step's tool time budget "
                                    f"({self.step_time_budget:g} s) is spent.", error="timeout")
            else:
                result = self._dispatch(call)
            info["calls"].append(call.to_dict())
            info["tool_outputs"].append(result.output)
            info["calls_ok"].append(result.ok)
            for key, value in self._call_terms(call, result).items():
                raw[key] = raw.get(key, 0.0) + value
            if result.error != "unknown_tool":  # a call to no tool is a format error, not a tool call
                self._num_calls += 1
            if result.error in ("arguments", "unknown_tool"):
                wellformed = False
            if not result.ok:
                succeeded = False
            else:
                self._last_value = result.output
            outputs.append(self.protocol.format_observation(result.output))
            tool_messages.append({"role": "tool", "name": call.name, "content": result.output})
        raw["call_wellformed"] = 1.0 if wellformed else 0.0
        raw["call_succeeded"] = 1.0 if succeeded and wellformed else 0.0
        if not wellformed:
            raw["format_error"] = 1.0
            self._num_errors += 1
        if self.protocol.name == "json":
            visible = text.split("<tool_call>", 1)[0].strip()
            calls = [
                {"type": "function", "function": {"name": c.name, "arguments": dict(c.arguments)}}
                for c in parsed.calls
            ]
            self.messages.append({"role": "assistant", "content": visible, "tool_calls": calls})
        else:
            self.messages.append({"role": "assistant", "content": text})
        self.messages.extend(tool_messages)
        return "\n".join(outputs)

    def _concurrent_results(self, calls: Sequence[ToolCall]) -> list[ToolResult] | None:
        """The results of an action's calls run at the same time, when there are several and every one
        names a tool marked ``concurrent`` (it keeps no state); ``None`` to run them one by one.

        Each call keeps its own time limit; the step's budget is one call's worth, as the calls
        overlap. Results come back in the calls' order, so rewards and transcripts are as sequential.
        """
        if len(calls) < 2 or type(self)._dispatch is not ToolEnv._dispatch:
            return None
        tools = [self.tools.get(c.name) for c in calls]
        if not all(t is not None and t.concurrent for t in tools):
            return None
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(len(calls), 8)) as pool:
            return list(pool.map(self._dispatch, calls))

    def _dispatch(self, call: ToolCall) -> ToolResult:
        tool = self.tools.get(call.name)
        if tool is None:
            hint = did_you_mean(call.name, self.tools)
            known = ", ".join(self.tools)
            return ToolResult(False, f"Error: unknown tool '{call.name}'.{hint} Available tools: {known}.",
                              error="unknown_tool")
        return tool(call)

    def _check_weights(self, overrides: Mapping[str, float] | None) -> dict[str, float]:
        weights = dict(self.reward_weights_defaults)
        if overrides is not None and not isinstance(overrides, Mapping):
            raise TypeError(
                f"Expected reward_weights to be a mapping of term names to numbers, e.g. {{'format_error': -0.5}}, "
                f"got {type(overrides).__name__} {overrides!r}. Terms: {sorted(weights)}."
            )
        for key, value in (overrides or {}).items():
            if key not in weights:
                raise ValueError(
                    f"Unknown reward term {key!r} in reward_weights: expected one of {sorted(weights)}."
                    f"{did_you_mean(str(key), weights)}"
                )
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"Expected reward_weights[{key!r}] to be a finite number, got {value!r}.")
            weights[key] = float(value)
        return weights


class EnvSnapshot:
    """An env's saved state (opaque): what :meth:`ToolEnv.snapshot` returns and :meth:`ToolEnv.restore` takes."""

    __slots__ = ("state", "wrappers")

    def __init__(self, state: dict[str, Any], wrappers: tuple[dict[str, Any], ...] = ()) -> None:
        self.state = state
        self.wrappers = wrappers


def _wrappers(env: gym.Env) -> list[gym.Wrapper]:
    out = []
    while isinstance(env, gym.Wrapper):
        out.append(env)
        env = env.env
    return out


def snapshot(env: gym.Env) -> EnvSnapshot:
    """:meth:`ToolEnv.snapshot` of ``env.unwrapped``, plus its wrappers' own state (``TimeLimit``'s elapsed steps, ...).

    >>> import gymnasium as gym, toolenv
    >>> env = gym.make("toolenv/Math-v0")
    >>> _ = env.reset(options={"index": 0})
    >>> saved = snapshot(env)
    >>> first = env.step("calculator(2+2)")[0]
    >>> restore(env, saved)
    >>> env.step("calculator(2+2)")[0] == first
    True
    """
    base = env.unwrapped
    if not isinstance(base, ToolEnv):
        raise TypeError(f"Expected a toolenv env (a ToolEnv inside its wrappers), got {type(base).__name__}.")
    counters = tuple({k: copy.copy(v) for k, v in vars(w).items() if k != "env"} for w in _wrappers(env))
    return EnvSnapshot(base.snapshot().state, counters)


def restore(env: gym.Env, snap: EnvSnapshot) -> None:
    """Put ``env`` (and its wrappers) back to ``snap``, taken from the same env by :func:`snapshot`."""
    wrappers = _wrappers(env)
    if len(wrappers) != len(snap.wrappers):
        raise ValueError(f"Expected the env the snapshot was taken from ({len(snap.wrappers)} wrappers), got one with {len(wrappers)}.")
    env.unwrapped.restore(EnvSnapshot(snap.state))  # type: ignore[attr-defined]
    for w, counters in zip(wrappers, snap.wrappers):
        for k, v in counters.items():
            setattr(w, k, v)


async def astep(env: gym.Env, action: Any) -> tuple[str, float, bool, bool, dict[str, Any]]:
    """``env.step(action)`` without blocking the event loop: the step runs in a worker thread.

    Many envs can step at once from one event loop (``asyncio.gather(*(astep(e, a) for ...))``),
    as async trainers (SkyRL, verifiers) drive them. Off the main thread a tool's time limit is
    kept by a daemon thread and a bounded wait instead of ``SIGALRM`` (see
    :class:`toolenv.tools.base.Tool`), so limits still hold. Each env must be stepped by one
    caller at a time, as any Gymnasium env.

    >>> import asyncio, gymnasium as gym, toolenv
    >>> envs = [gym.make("toolenv/Math-v0") for _ in range(3)]
    >>> for i, e in enumerate(envs):
    ...     _ = e.reset(options={"index": i})
    >>> async def play():
    ...     return await asyncio.gather(*(astep(e, "calculator(6*7)") for e in envs))
    >>> [obs for obs, *_ in asyncio.run(play())]
    ['42', '42', '42']
    """
    import asyncio

    return await asyncio.to_thread(env.step, action)
