"""TRICE's math task: word problems solved with a calculator tool."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from toolenv.core import ToolEnv
from toolenv.datasets.math import math_tasks
from toolenv.protocols import Protocol
from toolenv.tools.calculator import calculator

__all__ = ["MATH_INSTRUCTION", "MathEnv"]

#: TRICE's instruction for the math task (``generate_data/utils/math.json``).
MATH_INSTRUCTION = "Given a math problem, solve it. You can use a calculator for help."


class MathEnv(ToolEnv):
    """Math word problems with a calculator, as in TRICE (Qiao et al., NAACL 2024).

    ## Description

    Each episode is one word problem. The model may call ``calculator(expression)`` any number
    of times and then states its answer; the answer is right when its number equals the gold
    answer after rounding to 2 decimals (TRICE's check). The number is the last one in the
    answer text or, when the text states none, the value of the last successful calculator call.
    Tasks come from an embedded procedural generator (``dataset="procedural"``, no files
    needed) or from GSM8K, ASDiv, MAWPS (and its MultiArith/AddSub/SingleEq/SingleOp subsets)
    and SVAMP, read from the data directory (``data_dir=`` or ``$TOOLENV_DATA``). Every task
    keeps its gold answer and, where the source has one, a gold calculator expression.

    ## Action Space

    ``ToolAction(16384)``: any string of at most 16,384 characters in the env's protocol, or the same
    calls already parsed (an OpenAI assistant message or a list of ``{"name", "arguments"}``; see
    :mod:`toolenv.protocols.structured`). The text forms:

    - ``"trice"`` (default): ``calculator((12/60)*50)`` alone is a call, anything else an answer;
    - ``"react"``: ``Thought: ...\\nAction: calculator\\nAction Input: {"expression": "..."}`` or
      ``Final Answer: ...``;
    - ``"json"``: ``<tool_call>{"name": "calculator", "arguments": {"expression": "..."}}</tool_call>``.

    A malformed action (no parse, unknown tool, bad arguments, empty, too long) is never an
    exception: the observation says what was wrong and the ``format_error`` term is 1.

    ## Observation Space

    ``AnyText(16384)``. After ``reset``: the system prompt (protocol and tool descriptions) and
    the user message (instruction and question). After a call: the calculator's output (an
    error message if it refused). After an answer: ``""``. The chat form of the episode is
    ``env.unwrapped.messages`` (roles ``system``/``user``/``assistant``/``tool``) with
    ``env.unwrapped.tool_schemas``.

    ## Rewards

    ``reward = Σ weight × term``; ``info["reward_terms"]`` holds each weighted term and
    ``info["reward_raw"]`` the unweighted ones. Terms and default weights:
    ``answer_correct`` 1.0, ``format_error`` −0.1, ``call_wellformed`` 0, ``call_succeeded`` 0,
    ``step_cost`` 0. Set ``reward_weights={...}`` to change them.

    ## Episode End

    Terminates when the model answers. Truncates after ``max_episode_steps`` (4 by default,
    set at registration) through ``TimeLimit``.

    ## Arguments

    - ``dataset``: ``"procedural"``, ``"gsm8k"``, ``"asdiv"``, ``"mawps"`` or ``"svamp"``.
    - ``split``: ``"train"`` or ``"test"`` (MAWPS also ``"valid"``; all datasets ``"all"``).
    - ``subset``: MAWPS only: ``"multiarith"``, ``"addsub"``, ``"singleeq"``, ``"singleop"``.
    - ``level``: procedural only: 1–4 (``None`` mixes them).
    - ``data_dir``: where the datasets live; default ``$TOOLENV_DATA``.
    - ``protocol``, ``reward_weights``, ``answer_reward``, ``tool_timeout``, ``max_output_chars``,
      ``render_mode``: see :class:`toolenv.core.ToolEnv`.

    ## Registered Configurations

    ``toolenv/Math-v0`` (procedural), ``toolenv/GSM8K-v0``, ``toolenv/ASDiv-v0``,
    ``toolenv/MAWPS-v0``, ``toolenv/SVAMP-v0`` (train splits), and a ``-Test-v0`` id for each
    (``toolenv/MAWPS-Valid-v0`` too).

    ## Version History

    - v0: initial version.

    ## Example

    >>> import gymnasium as gym, toolenv
    >>> env = gym.make("toolenv/Math-v0")
    >>> obs, info = env.reset(seed=0)
    >>> env.step("calculator(3*4)")[0]
    '12'
    >>> for action in env.unwrapped.gold_actions():  # the expert: gold call, then the answer
    ...     obs, reward, terminated, truncated, info = env.step(action)
    >>> terminated, info["success"], reward
    (True, True, 1.0)
    """

    def __init__(
        self,
        dataset: str = "procedural",
        split: str = "train",
        *,
        subset: str | None = None,
        level: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        protocol: str | Protocol = "trice",
        reward_weights: Mapping[str, float] | None = None,
        answer_reward: Callable[..., list[float]] | None = None,
        tool_timeout: float = 1.0,
        max_output_chars: int = 2_000,
        render_mode: str | None = None,
    ) -> None:
        tasks = math_tasks(dataset, split, subset=subset, level=level, data_dir=data_dir)
        super().__init__(
            tasks,
            [calculator],
            protocol=protocol,
            instruction=MATH_INSTRUCTION,
            reward_weights=reward_weights,
            answer_reward=answer_reward,
            tool_timeout=tool_timeout,
            max_output_chars=max_output_chars,
            render_mode=render_mode,
        )
        self.dataset = dataset
        self.split = split

    def __repr__(self) -> str:
        return f"MathEnv(dataset={self.dataset!r}, split={self.split!r}, protocol={self.protocol.name!r})"

