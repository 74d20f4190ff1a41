"""BFCL (Berkeley Function Calling Leaderboard v4): multi-turn stateful API tasks and single-turn AST tasks.

Needs the optional ``bfcl-eval`` package (``pip install --no-deps bfcl-eval==2026.3.23 && pip
install mpmath``); without it, making an env raises :class:`~toolenv.datasets.bfcl.BFCLNotInstalledError`.

Model text never runs as code: calls are read with :mod:`ast` by the protocol and dispatched to
methods of the env's own API instances by name. The multi-turn verdict reuses BFCL's own
``state_checker`` and ``response_checker`` (``bfcl_eval/eval_checker/multi_turn_eval/
multi_turn_checker.py``, which import without the vendor SDKs). BFCL's AST checker
(``eval_checker/ast_eval/ast_checker.py``) does not import without them (it pulls every model
handler through ``constants/model_config.py``), so :func:`ast_check` is a port of its Python path;
``tests/toolenv/test_bfcl.py`` checks that both agree.
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import inspect
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from toolenv.core import BASE_REWARD_WEIGHTS, ToolEnv, truncate
from toolenv.datasets.bfcl import (
    BFCL_INSTALL,
    BFCLNotInstalledError,
    load_bfcl_multi_turn,
    load_bfcl_single_turn,
)
from toolenv.protocols import Action, Protocol
from toolenv.protocols.python_calls import bfcl_system_prompt, parse_python_calls
from toolenv.spaces import AnyText
from toolenv.tools.base import Tool, ToolArgumentError, ToolResult, ToolTimeout, process_state_kept
from toolenv.types import Task, ToolCall

__all__ = [
    "BFCL_MAX_OBSERVATION_CHARS",
    "MULTI_TURN_REWARD_WEIGHTS",
    "BFCLEnv",
    "BFCLMultiTurnEnv",
    "BFCLTool",
    "ast_check",
    "execution_text",
]

#: Longest observation of the BFCL envs: the system prompt lists every function doc of the
#: involved classes (up to ~48,000 characters) and long-context outputs reach ~32,000.
BFCL_MAX_OBSERVATION_CHARS = 262_144

#: Reward terms of the multi-turn env: the base terms plus ``turn_correct``.
MULTI_TURN_REWARD_WEIGHTS: Mapping[str, float] = {
    **BASE_REWARD_WEIGHTS,
    "turn_correct": 0.0,  # 1 when the turn that a reply closed passes BFCL's checks
}

# BFCL's messages (bfcl_eval/constants/default_prompts.py).
_MORE_FUNCTIONS = "I have updated some more functions you can choose from. What about now?"
_GOLD_REPLY = "Done."
_GOLD_DECLINE = "I cannot do that with the functions and information I have."


# ------------------------------------------------------------------------------------ execution
def execution_text(value: Any) -> str:
    """A call's return value as BFCL records it (``execute_multi_turn_func_call``).

    >>> execution_text({"current_working_directory": "temp"}), execution_text(3.0)
    ('{"current_working_directory": "temp"}', '3.0')
    """
    if type(value) is str:
        return value
    if type(value) is dict:
        try:
            return json.dumps(value)
        except Exception:
            pass
    try:
        return str(value)
    except Exception as e:  # e.g. an int past Python's 4,300-digit str limit: text, never a raise
        return f"<unprintable {type(value).__name__}: {type(e).__name__}: {e}>"


#: Bounds on model-written arguments of BFCL's APIs whose work is one C-level operation that no
#: time limit can interrupt (``decimal`` / ``mpmath`` precision, big-integer powers and products).
#: BFCL's own tasks stay far inside them; past them the call is an error, as a bad argument is.
MAX_PRECISION = 1_000
MAX_NUMBER_DIGITS = 1_000


def _digits(value: Any) -> float:
    """Decimal digits of a number's integer part (0 for non-numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    if isinstance(value, int) and value.bit_length() > 1000:  # past float range: estimate from the bits
        return value.bit_length() * math.log10(2)
    return math.log10(abs(value)) if value != 0 and math.isfinite(value) else 0.0


def argument_bounds_problem(name: str, kwargs: Mapping[str, Any]) -> str | None:
    """Why a BFCL call's arguments are out of bounds (see :data:`MAX_PRECISION`), or ``None``.

    >>> argument_bounds_problem("square_root", {"number": 2, "precision": 1_500_000})
    'precision must be at most 1000, got 1500000.'
    >>> argument_bounds_problem("power", {"base": 10, "exponent": 5000})
    'the result would have about 5000 digits; numbers are limited to 1000 digits.'
    >>> argument_bounds_problem("add", {"a": 1, "b": 2}) is None
    True
    """
    precision = kwargs.get("precision")
    if isinstance(precision, (int, float)) and not isinstance(precision, bool) and precision > MAX_PRECISION:
        return f"precision must be at most {MAX_PRECISION}, got {precision}."
    numbers = [v for v in kwargs.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    numbers += [x for v in kwargs.values() if isinstance(v, (list, tuple)) for x in v
                if isinstance(x, (int, float)) and not isinstance(x, bool)]
    if any(_digits(v) > MAX_NUMBER_DIGITS for v in numbers):
        return f"numbers are limited to {MAX_NUMBER_DIGITS} digits."
    if name == "power":
        base, exponent = kwargs.get("base"), kwargs.get("exponent")
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (base, exponent)):
            digits = abs(exponent) * _digits(base)  # type: ignore[arg-type]
            if digits > MAX_NUMBER_DIGITS:
                return f"the result would have about {digits:.0f} digits; numbers are limited to {MAX_NUMBER_DIGITS} digits."
    if name == "multiply" and sum(_digits(v) for v in numbers) > MAX_NUMBER_DIGITS:
        return f"the product would have more than {MAX_NUMBER_DIGITS} digits."
    return None


_OPENAPI_TYPES = {
    "integer": "integer", "number": "number", "float": "number", "string": "string", "boolean": "boolean",
    "bool": "boolean", "array": "array", "list": "array", "dict": "object", "object": "object",
    "tuple": "array", "any": "string",
}


def _openapi_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A BFCL parameter schema (types ``dict``, ``float``, ``tuple``, ``any``) as JSON schema."""
    out = dict(schema)
    out["type"] = _OPENAPI_TYPES.get(str(schema.get("type", "string")), "string")
    if isinstance(schema.get("properties"), Mapping):
        out["properties"] = {k: _openapi_schema(v) for k, v in schema["properties"].items()}
    if isinstance(schema.get("items"), Mapping):
        out["items"] = _openapi_schema(schema["items"])
    return out


class BFCLTool(Tool):
    """A BFCL function: its doc as the schema, a method of an API instance as the body.

    Arguments go to the method as the model wrote them (no coercion), and the output is the
    method's return value as BFCL records it (:func:`execution_text`); a raised exception reads
    ``"Error during execution: ..."`` as in BFCL. A returned ``{"error": ...}`` counts as a
    failed call. :attr:`last_text` keeps the full text of the last call.

    Args:
        doc: The BFCL function doc (``name``, ``description``, ``parameters``).
        method: The bound method to run; ``None`` for a tool that is only described.
        timeout: Wall-clock limit of one call, in seconds.
        max_output_chars: Longest output the model sees.
    """

    def __init__(self, doc: Mapping[str, Any], method: Any = None, *, timeout: float = 1.0,
                 max_output_chars: int = 65_536) -> None:
        super().__init__(self._invoke, name=str(doc["name"]), description=str(doc.get("description", "")),
                         timeout=timeout, max_output_chars=max_output_chars)
        self.doc = doc
        self.method = method
        params = doc.get("parameters", {})
        self.parameters = {**_openapi_schema(params), "type": "object", "required": list(params.get("required", []))}
        if method is not None:
            self._signature: inspect.Signature | None = inspect.signature(method)
            self.param_names = [p.name for p in self._signature.parameters.values()
                                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        else:
            self._signature = None
            self.param_names = list(params.get("properties", {}))
        self.last_text = ""

    def _invoke(self, **kwargs: Any) -> Any:
        if self.method is None:
            raise NotImplementedError(f"{self.name} is described, not executable.")
        problem = argument_bounds_problem(self.name, kwargs)
        if problem is not None:
            raise ValueError(problem)
        value = self.method(**kwargs)
        # the text is taken while the call's own numeric state (mpmath's precision) is in force, as
        # BFCL records it: an mpf's repr depends on the precision in force when it is printed
        return value, execution_text(value)

    def bind(self, call: ToolCall) -> dict[str, Any]:
        """The call's arguments as they are; a positional input goes to the first parameter."""
        kwargs = dict(call.arguments)
        if call.positional is not None:
            if not self.param_names:
                raise ToolArgumentError(f"{self.name} takes no arguments, got one positional input.")
            first = self.param_names[0]
            if first in kwargs:
                raise ToolArgumentError(f"{self.name} got multiple values for argument '{first}'.")
            kwargs = {first: call.positional, **kwargs}
        return kwargs

    def __call__(self, call: ToolCall) -> ToolResult:
        start = time.perf_counter()
        value: Any = None
        ok = False
        error: Any = None
        try:
            kwargs = self.bind(call)
        except ToolArgumentError as e:
            text, error = f"Error during execution: {e}", "arguments"
        else:
            bad_arguments = False
            if self._signature is not None:
                try:
                    self._signature.bind(**kwargs)
                except TypeError:
                    bad_arguments = True  # calling raises the same TypeError BFCL records, and runs nothing
            try:
                value = self._run(kwargs)
            except ToolTimeout:
                text, error = f"Error during execution: {self.name} timed out after {self.timeout:g} s.", "timeout"
            except Exception as e:
                text, error = f"Error during execution: {e}", "arguments" if bad_arguments else "exception"
            else:
                value, text = value
                ok = not (isinstance(value, dict) and "error" in value) and not text.startswith("<unprintable ")
                error = None if ok else "exception"
        self.last_text = text
        return ToolResult(ok, self.format_output(text), value=value if ok else None, error=error,
                          elapsed=time.perf_counter() - start)

    @property
    def schema(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                  "parameters": self.parameters}}


# ----------------------------------------------------------------------------------- API classes
@functools.cache
def _api_class(class_name: str) -> type:
    try:
        from bfcl_eval.constants.executable_backend_config import CLASS_FILE_PATH_MAPPING
    except ImportError as e:
        raise BFCLNotInstalledError(f"The BFCL envs need the bfcl-eval package: {BFCL_INSTALL} ({e})") from e
    if class_name not in CLASS_FILE_PATH_MAPPING:
        raise ValueError(f"Expected a BFCL API class, one of {sorted(CLASS_FILE_PATH_MAPPING)}; got {class_name!r}.")
    try:
        module = importlib.import_module(CLASS_FILE_PATH_MAPPING[class_name])
    except ImportError as e:
        raise BFCLNotInstalledError(f"BFCL's {class_name} could not be imported ({e}); install: {BFCL_INSTALL}") from e
    return getattr(module, class_name)


@functools.cache
def _signatures_of(class_name: str) -> dict[str, tuple[str, ...]]:
    """Public methods of an API class and their parameter names, in order."""
    cls = _api_class(class_name)
    out: dict[str, tuple[str, ...]] = {}
    for name, fn in inspect.getmembers(cls, inspect.isfunction):
        if not name.startswith("_"):
            params = list(inspect.signature(fn).parameters)[1:]
            out[name] = tuple(params)
    return out


def _new_instances(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Fresh API instances loaded with the task's initial config, exactly as BFCL's executor does."""
    from bfcl_eval.constants.executable_backend_config import STATELESS_CLASSES

    instances: dict[str, Any] = {}
    for class_name in meta["involved_classes"]:
        instance = _api_class(class_name)()
        if class_name not in STATELESS_CLASSES:
            config = copy.deepcopy(meta["initial_config"].get(class_name, {}))
            instance._load_scenario(config, long_context=bool(meta.get("long_context")))
        instances[class_name] = instance
    return instances


def _verdict_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """A BFCL checker result without its object-valued details (JSON-friendly for ``info``)."""
    out: dict[str, Any] = {"valid": bool(result.get("valid"))}
    if not out["valid"]:
        out["error_type"] = result.get("error_type")
        out["error_message"] = result.get("error_message")
        details = result.get("details") or {}
        if "differences" in details:
            out["differences"] = sorted(details["differences"])
        if "missing_items" in details:
            out["missing_items"] = list(details["missing_items"])
    return out


# -------------------------------------------------------------------------------- the envs' base
class _BFCLBase(ToolEnv):
    """What both BFCL envs share: per-task tool sets, BFCL prompts, long observations."""

    def _init_bfcl(self) -> None:
        self.observation_space = AnyText(BFCL_MAX_OBSERVATION_CHARS)

    def _set_tools(self, tools: Sequence[BFCLTool], docs: Sequence[Mapping[str, Any]],
                   signatures: Mapping[str, Sequence[str]]) -> None:
        # ToolEnv fixes its tools at construction; BFCL's change with every task (and turn).
        self.tools = {t.name: t for t in tools}
        self._tool_names = {name: tuple(signatures.get(name, ())) for name in self.tools}  # type: ignore[assignment]
        # The prompt depends only on the task's docs (and which of them are offered yet): cache it,
        # as rendering ~30 docs as JSON is a third of a reset.
        key = (self.task.id if self.task is not None else "", tuple(d["name"] for d in docs))
        cache: dict[tuple[str, tuple[str, ...]], str] = self.__dict__.setdefault("_system_prompts", {})
        if key not in cache:
            if self.protocol.name == "python":
                cache[key] = bfcl_system_prompt(docs)
            else:
                cache[key] = self.protocol.instructions(list(self.tools.values()))
        self.system_prompt = cache[key]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        obs, info = super().reset(seed=seed, options=options)
        # ToolEnv cuts observations at 16,384 characters; BFCL's system prompts are longer.
        obs = truncate(f"{self.system_prompt}\n\n{info['prompt']}", BFCL_MAX_OBSERVATION_CHARS)
        info["task"] = copy.deepcopy(info["task"])  # the task's meta is shared; infos must not be
        return obs, info

    def _format_calls(self, calls: Sequence[ToolCall]) -> str:
        format_calls = getattr(self.protocol, "format_calls", None)
        if callable(format_calls):
            return str(format_calls(calls))
        return "\n".join(self.protocol.format_call(c) for c in calls)


# -------------------------------------------------------------------------------- multi-turn
class BFCLMultiTurnEnv(_BFCLBase):
    """BFCL v4 multi-turn: a conversation with stateful APIs (file system, trading, travel, ...).

    ## Description

    Each episode is one BFCL multi-turn entry: a user conversation of 2–8 turns over one to
    four API classes (``GorillaFileSystem``, ``MathAPI``, ``MessageAPI``, ``TwitterAPI``,
    ``TicketAPI``, ``TradingBot``, ``TravelAPI``, ``VehicleControlAPI``). On reset the env makes
    fresh instances of the involved classes and loads the entry's ``initial_config`` into them
    exactly as BFCL's executor does; the tools are the methods named in the entry's function
    docs, with those docs as their schemas. The model answers each user turn with calls, which
    run on the env's own instances (read with :mod:`ast`, never ``eval``; only methods offered
    in the docs can be called); a reply without calls ends the turn and the next user turn is
    the observation. In ``miss_func`` entries a held-out function is added at the turn where
    BFCL adds it, with BFCL's message. After each turn the env runs the turn's ground-truth
    calls on a second set of instances and applies BFCL's checks: the instances' public state
    must equal the ground truth's (``state_checker``), and every ground-truth execution result
    of the turn must be among the model's results so far (``response_checker``); a turn with
    ground-truth calls needs at least one call step. The episode passes when every turn does,
    which is BFCL's verdict for the entry.

    Differences from BFCL's pipeline: a malformed call list (e.g. a non-literal argument) is a
    format error the model can fix in the same turn, where BFCL's decoder would end the turn;
    positional arguments are bound to parameter names (BFCL's decoder drops them); a function
    not yet offered cannot be called. BFCL's 20-steps-per-turn limit is replaced by
    ``max_episode_steps``.

    ## Action Space

    ``AnyText(16384)``, in the env's protocol: ``"python"`` (default, BFCL's prompting format)
    ``[cd(folder='document'), mkdir(dir_name='temp')]``, or ``"json"``
    ``<tool_call>{"name": "cd", "arguments": {"folder": "document"}}</tool_call>``. Any other
    text is a reply that ends the turn. Malformed calls are never an exception: the
    observation says what was wrong and ``format_error`` is 1.

    ## Observation Space

    ``AnyText(262144)``. After ``reset``: the system prompt (BFCL's, listing the function docs
    as JSON, for the python protocol) and the first user turn. After calls: their execution
    results, one per line, as BFCL records them (``"Error during execution: ..."`` for errors).
    After a reply: the next user turn, or ``""`` at the end. ``env.unwrapped.messages`` is the
    conversation and ``env.unwrapped.tool_schemas`` the current tools.

    ## Rewards

    ``reward = Σ weight × term`` with ``info["reward_terms"]``: ``answer_correct`` 1.0 (on the
    last reply: BFCL's verdict for the whole entry), ``turn_correct`` 0 (on each reply: the
    closed turn passed), ``call_succeeded`` 0, ``call_wellformed`` 0, ``format_error`` −0.1,
    ``step_cost`` 0.

    ## Episode End

    Terminates on the reply to the last user turn; ``info["success"]`` is BFCL's verdict and
    ``info["bfcl"]`` holds it with one verdict per turn (``valid``, ``error_type``,
    ``error_message``, ``differences``, ``missing_items``). Every reply's ``info["turn_verdict"]``
    is that turn's. Truncates after ``max_episode_steps`` (60 at registration).

    ## Arguments

    - ``category``: ``"base"``, ``"miss_func"``, ``"miss_param"`` or ``"long_context"``.
    - ``protocol``: ``"python"`` (default) or ``"json"`` (any protocol works).
    - ``reward_weights``, ``tool_timeout``, ``max_output_chars`` (65,536), ``render_mode``:
      see :class:`toolenv.core.ToolEnv`.

    ## Registered Configurations

    ``toolenv/BFCLMultiTurn-v0`` (``category="base"``); the other categories by kwarg.

    ## Version History

    - v0: initial version (BFCL v4 data of ``bfcl-eval==2026.3.23``).

    ## Example

    >>> import gymnasium as gym, pytest, toolenv
    >>> _ = pytest.importorskip("bfcl_eval")  # the example needs bfcl-eval
    >>> env = gym.make("toolenv/BFCLMultiTurn-v0")
    >>> obs, info = env.reset(options={"index": 0})
    >>> obs.splitlines()[-1]
    "Move 'final_report.pdf' within document directory to 'temp' directory in document. Make sure to create the directory"
    >>> env.step("[cd(folder='document'), mkdir(dir_name='temp'), mv(source='final_report.pdf', destination='temp')]")[0]
    '{"current_working_directory": "document"}\\nNone\\n{"result": "\\'final_report.pdf\\' moved to \\'temp/final_report.pdf\\'"}'
    >>> obs, reward, terminated, truncated, info = env.step("Done.")
    >>> info["turn_verdict"]["valid"], obs.startswith("Perform a detailed search")
    (True, True)
    >>> for action in env.unwrapped.gold_actions()[2:]:  # the expert: ground-truth calls, then a reply, per turn
    ...     obs, reward, terminated, truncated, info = env.step(action)
    >>> terminated, info["success"], reward
    (True, True, 1.0)
    """

    reward_weights_defaults: ClassVar[Mapping[str, float]] = MULTI_TURN_REWARD_WEIGHTS

    def __init__(
        self,
        category: str = "base",
        *,
        protocol: str | Protocol = "python",
        reward_weights: Mapping[str, float] | None = None,
        tool_timeout: float = 1.0,
        max_output_chars: int = 65_536,
        render_mode: str | None = None,
    ) -> None:
        tasks = load_bfcl_multi_turn(category)
        if importlib.util.find_spec("mpmath") is None:  # BFCL's MathAPI needs it; fail here, not mid-episode
            raise BFCLNotInstalledError(f"The BFCL multi-turn env needs mpmath, which is not installed: {BFCL_INSTALL}")
        super().__init__(tasks, [], protocol=protocol, reward_weights=reward_weights, tool_timeout=tool_timeout,
                         max_output_chars=max_output_chars, render_mode=render_mode)
        self._init_bfcl()
        self.category = category
        self._tool_timeout = tool_timeout
        self._max_output_chars = max_output_chars
        self._turn = 0
        self._verdicts: list[dict[str, Any]] = []

    def __repr__(self) -> str:
        return f"BFCLMultiTurnEnv(category={self.category!r}, protocol={self.protocol.name!r})"

    # ------------------------------------------------------------------ hooks
    def _prompt(self, task: Task) -> str:
        # Called once per reset with the new task: set up its instances, tools and prompt.
        meta = task.meta
        self._instances = _new_instances(meta)
        self._gt_instances = _new_instances(meta)
        self._owner = {m: c for c in meta["involved_classes"] for m in _signatures_of(c)}
        self._signatures = {m: p for c in meta["involved_classes"] for m, p in _signatures_of(c).items()}
        self._docs = list(meta["functions"])
        self._set_tools([self._tool(d) for d in self._docs], self._docs, self._signatures)
        self._turn = 0
        self._turn_called = False
        self._all_results: list[str] = []
        self._verdicts = []
        self._closed: dict[str, Any] | None = None
        self._turn_obs: str | None = None
        return self._turn_text(0)

    def _call_terms(self, call: ToolCall, result: ToolResult) -> dict[str, float]:
        # Record the call's execution result as BFCL would (an unknown name is a NameError there).
        tool = self.tools.get(call.name)
        if isinstance(tool, BFCLTool) and result.error != "unknown_tool":
            text = tool.last_text
        else:
            text = f"Error during execution: name '{call.name.split('.')[0]}' is not defined"
        self._all_results.append(text)
        self._turn_called = True
        return {}

    def _on_answer(self, answer: str) -> tuple[dict[str, float], bool, str]:
        verdict = self._close_turn()
        raw = {"turn_correct": float(verdict["valid"])}
        turns = self.task.meta["turns"]  # type: ignore[union-attr]
        if self._turn + 1 >= len(turns):
            raw["answer_correct"] = float(all(v["valid"] for v in self._verdicts))
            self._turn_obs = ""
            return raw, True, ""
        self._turn += 1
        text = self._open_turn(self._turn)
        self.messages.append({"role": "user", "content": text})
        self._turn_obs = text
        return raw, False, text

    def _episode_end_info(self) -> dict[str, Any]:
        failed = [v for v in self._verdicts if not v["valid"]]
        out: dict[str, Any] = {"valid": not failed, "turns": copy.deepcopy(self._verdicts)}
        if failed:
            out["error_type"] = failed[0].get("error_type")
            out["error_message"] = failed[0].get("error_message")
        return {"bfcl": out}

    # ------------------------------------------------------------- public API
    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """As :meth:`ToolEnv.step`; a reply ends the user turn and the next one is the observation."""
        self._closed = None
        self._turn_obs = None
        obs, reward, terminated, truncated, info = super().step(action)
        if info["action_kind"] == "call":  # rebuilt uncut: long-context outputs exceed ToolEnv's limit
            obs = "\n".join(self.protocol.format_observation(o) for o in info["tool_outputs"])
        elif self._turn_obs is not None:
            obs = self._turn_obs
        info["turn"] = self._turn
        if self._closed is not None:
            info["turn_verdict"] = copy.deepcopy(self._closed)
        return truncate(obs, BFCL_MAX_OBSERVATION_CHARS), reward, terminated, truncated, info

    def gold_actions(self, task: Task | None = None) -> list[str]:
        """Per turn: the ground-truth calls as one action (if any), then a reply that ends the turn."""
        task = task or self.task
        if task is None:
            return super().gold_actions(task)
        signatures = {m: p for c in task.meta["involved_classes"] for m, p in _signatures_of(c).items()}
        actions: list[str] = []
        for strings in task.meta["ground_truth"]:
            calls = self._parse_truth(strings, signatures, task.id)
            if calls:
                actions.append(self._format_calls(calls))
            actions.append(self.protocol.format_answer(_GOLD_REPLY if calls else _GOLD_DECLINE))
        return actions

    # -------------------------------------------------------------- internals
    def _tool(self, doc: Mapping[str, Any]) -> BFCLTool:
        name = doc["name"]
        method = getattr(self._instances[self._owner[name]], name)
        return BFCLTool(doc, method, timeout=self._tool_timeout, max_output_chars=self._max_output_chars)

    def _turn_text(self, turn: int) -> str:
        text = self.task.meta["turns"][turn]  # type: ignore[union-attr]
        return text if text is not None else ""

    def _open_turn(self, turn: int) -> str:
        """The user message of ``turn``; a held-out turn adds its functions, with BFCL's message."""
        held = self.task.meta["missed_functions"].get(str(turn))  # type: ignore[union-attr]
        if not held:
            return self._turn_text(turn)
        self._docs.extend(held)
        tools = [*self.tools.values(), *(self._tool(d) for d in held)]
        prompt = self.system_prompt
        self._set_tools(tools, self._docs, self._signatures)
        self.system_prompt = prompt  # the conversation's system message stays as it was
        if self.protocol.name == "python":
            return f"{held}\n{_MORE_FUNCTIONS}"  # BFCL formats the list of docs with str()
        return _MORE_FUNCTIONS

    @staticmethod
    def _parse_truth(strings: Sequence[str], signatures: Mapping[str, Sequence[str]], task_id: str) -> list[ToolCall]:
        calls: list[ToolCall] = []
        for s in strings:
            parsed = parse_python_calls(s, signatures)
            if not isinstance(parsed, tuple):
                raise ValueError(f"Expected a literal ground-truth call in {task_id}, got {s!r}: {parsed}")
            calls.extend(parsed)
        return calls

    def _run_truth(self, calls: Sequence[ToolCall]) -> list[str]:
        results = []
        for call in calls:
            method = getattr(self._gt_instances[self._owner[call.name]], call.name)
            try:
                with process_state_kept():  # the policy's calls restore it too: both print under their own
                    results.append(execution_text(method(**call.arguments)))
            except Exception as e:
                results.append(f"Error during execution: {e}")
        return results

    def _close_turn(self) -> dict[str, Any]:
        """BFCL's checks for the turn that just ended (``multi_turn_checker``, one turn)."""
        from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import response_checker, state_checker

        assert self.task is not None
        turn = self._turn
        truth = self.task.meta["ground_truth"][turn]
        truth_results = self._run_truth(self._parse_truth(truth, self._signatures, self.task.id))
        if not truth:  # BFCL checks nothing on a turn whose ground truth is empty
            verdict: dict[str, Any] = {"valid": True, "checked": False}
        elif not self._turn_called:
            verdict = {"valid": False, "checked": True, "error_type": "multi_turn:empty_turn_model_response",
                       "error_message": f"Model response list is empty for turn {turn}"}
        else:
            result = state_checker(self._instances, self._gt_instances)
            if result["valid"]:
                result = response_checker(self._all_results, truth_results, turn)
            verdict = {**_verdict_summary(result), "checked": True}
        verdict["turn"] = turn
        self._verdicts.append(verdict)
        self._closed = verdict
        self._turn_called = False
        return verdict


# ------------------------------------------------------------------------------ single turn
def ast_check(
    functions: Sequence[Mapping[str, Any]],
    model_output: Sequence[Mapping[str, Mapping[str, Any]]],
    possible_answer: Sequence[Mapping[str, Mapping[str, list[Any]]]],
    category: str,
) -> dict[str, Any]:
    """BFCL's AST check of single-turn calls (the Python path of ``ast_checker``), ported.

    Args:
        functions: The task's function docs.
        model_output: The model's calls, each ``{name: {param: value}}``.
        possible_answer: BFCL's ground truth, each ``{name: {param: [allowed values]}}``.
        category: The BFCL category; ``parallel`` and ``multiple`` in it pick BFCL's checkers.

    Returns:
        ``{"valid": bool, "error": [...], "error_type": str}`` as BFCL's checker returns it.

    >>> doc = {"name": "area", "parameters": {"type": "dict", "properties": {"base": {"type": "integer"}}, "required": ["base"]}}
    >>> ast_check([doc], [{"area": {"base": 10}}], [{"area": {"base": [10]}}], "simple_python")["valid"]
    True
    >>> ast_check([doc], [{"area": {"base": 11}}], [{"area": {"base": [10]}}], "simple_python")["error_type"]
    'value_error:others'
    """
    if "parallel" in category:
        return _parallel_no_order(functions, model_output, possible_answer)
    if "multiple" in category:
        return _multiple(functions, model_output, possible_answer)
    if len(model_output) != 1:
        return {"valid": False, "error": ["Wrong number of functions."], "error_type": "simple_function_checker:wrong_count"}
    return _simple(functions[0], model_output[0], possible_answer[0])


# The port follows bfcl_eval/eval_checker/ast_eval/ast_checker.py (Apache-2.0) line by line, quirks included.
_PYTHON_TYPES: dict[str, type] = {"string": str, "integer": int, "float": float, "boolean": bool, "array": list,
                                  "tuple": list, "dict": dict, "any": str}
_NESTED = ("array", "tuple")


def _find_description(functions: Any, name: str) -> Any:
    if isinstance(functions, list):
        for f in functions:
            if f["name"] == name:
                return f
        return None
    return functions


def _answer_type(possible: list[Any]) -> type | None:
    for answer in possible:
        if answer != "":
            return type(answer)
    return None


def _type_check(param: str, value: Any, possible: list[Any], described: str, expected: type,
                nested: type | None) -> dict[str, Any]:
    result: dict[str, Any] = {"valid": True, "error": [], "is_variable": False, "error_type": "type_error:simple"}
    is_variable = False
    answer_type = _answer_type(possible)
    if answer_type is not None and answer_type != expected:
        is_variable = True
    if type(value) is expected:
        if nested is None:
            result["is_variable"] = is_variable
            return result
        for item in possible:
            flag = True
            if type(item) is list:
                for v in value:
                    if not _type_check(param, v, item, str(nested), nested, None)["valid"]:
                        flag = False
                        break
            if flag:
                return {"valid": True, "error": [], "is_variable": is_variable}
        result["valid"] = False
        result["error"] = [
            f"Nested type checking failed for parameter {param!r}. Expected outer type {described} with inner type "
            f"{nested}. Parameter value: {value!r}."
        ]
        result["error_type"] = "type_error:nested"
    answer_type = _answer_type(possible)
    if answer_type is not None and type(value) is answer_type:
        result["is_variable"] = True
        return result
    result["valid"] = False
    result["error"].append(
        f"Incorrect type for parameter {param!r}. Expected type {described}, got {type(value).__name__}. "
        f"Parameter value: {value!r}."
    )
    result["error_type"] = "type_error:simple"
    return result


def _standardize(text: str) -> str:
    return re.sub(r"[ \,\.\/\-\_\*\^]", "", text).lower().replace("'", '"')


def _string_check(param: str, value: str, possible: list[Any]) -> dict[str, Any]:
    if _standardize(value) not in [_standardize(p) for p in possible if type(p) is str]:
        return {"valid": False, "error_type": "value_error:string", "error": [
            f"Invalid value for parameter {param!r}: {value!r}. Expected one of {possible}. Case insensitive."]}
    return {"valid": True, "error": []}


def _list_check(param: str, value: Any, possible: list[Any]) -> dict[str, Any]:
    got = [_standardize(v) if type(v) is str else v for v in value]
    allowed = [[_standardize(x) if type(x) is str else x for x in p] for p in possible]
    if got not in allowed:
        return {"valid": False, "error_type": "value_error:list/tuple", "error": [
            f"Invalid value for parameter {param!r}: {value!r}. Expected one of {possible}."]}
    return {"valid": True, "error": []}


def _dict_check(param: str, value: dict[str, Any], possibles: list[Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"valid": False, "error": [], "error_type": "dict_checker:unclear"}
    for possible in possibles:
        if possible == "":
            continue
        result = {"valid": False, "error": [], "error_type": "dict_checker:unclear"}
        flag = True
        for key, v in value.items():
            if key not in possible:
                result["error"].append(f"Unexpected dict key parameter: '{key}'.")
                result["error_type"] = "value_error:dict_key"
                flag = False
                break
            got = _standardize(v) if type(v) is str else v
            allowed = [_standardize(x) if type(x) is str else x for x in possible[key]]
            if got not in allowed:
                result["error"].append(f"Invalid value for parameter {key!r}: {v!r}. Expected one of {allowed}.")
                result["error_type"] = "value_error:dict_value"
                flag = False
                break
        for key, v in possible.items():
            if key not in value and "" not in v:
                result["error"].append(f"Missing dict key parameter: '{key}'.")
                result["error_type"] = "value_error:dict_key"
                flag = False
                break
        if flag:
            return {"valid": True, "error": []}
    return result


def _list_dict_check(param: str, value: list[Any], possibles: list[Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"valid": False, "error": [], "error_type": "list_dict_checker:unclear"}
    for possible in possibles:
        flag = True
        if len(value) != len(possible):
            result = {"valid": False, "error": ["Wrong number of dictionaries in the list."],
                      "error_type": "value_error:list_dict_count"}
            continue
        for i, item in enumerate(value):
            result = _dict_check(param, item, [possible[i]])
            if not result["valid"]:
                flag = False
                break
        if flag:
            return {"valid": True, "error": []}
    return result


def _simple(description: Mapping[str, Any], output: Mapping[str, Any], possible_answer: Mapping[str, Any]) -> dict[str, Any]:
    possible = list(possible_answer.values())[0]
    name = description["name"]
    details = description["parameters"]["properties"]
    required = description["parameters"]["required"]
    result: dict[str, Any] = {"valid": True, "error": [], "error_type": "simple_function_checker:unclear"}
    if name not in output:
        return {"valid": False, "error": [f"Function name {name!r} not found in model output."],
                "error_type": "simple_function_checker:wrong_func_name"}
    params = output[name]
    for param in required:
        if param not in params:
            return {"valid": False, "error": [f"Missing required parameter: {param!r}."],
                    "error_type": "simple_function_checker:missing_required"}
    for param, value in params.items():
        if param not in details or param not in possible:
            return {"valid": False, "error": [f"Unexpected parameter: {param!r}."],
                    "error_type": "simple_function_checker:unexpected_param"}
        described = details[param]["type"]
        expected = _PYTHON_TYPES[described]
        nested = _PYTHON_TYPES[details[param]["items"]["type"]] if described in _NESTED else None
        if described == "tuple" and type(value) is tuple:
            value = list(value)
        if described == "float" and type(value) is int:
            value = float(value)
        checked = _type_check(param, value, possible[param], described, expected, nested)
        if not checked["valid"]:
            return checked
        if not checked["is_variable"]:
            if expected is dict:
                sub = _dict_check(param, value, possible[param])
            elif expected is list and nested is dict:
                sub = _list_dict_check(param, value, possible[param])
            elif expected is str:
                sub = _string_check(param, value, possible[param])
            elif expected is list:
                sub = _list_check(param, value, possible[param])
            else:
                sub = None
            if sub is not None:
                if not sub["valid"]:
                    return sub
                continue
        if value not in possible[param]:
            return {"valid": False, "error": [
                f"Invalid value for parameter {param!r}: {value!r}. Expected one of {possible[param]}."],
                "error_type": "value_error:others"}
    for param in possible:
        if param not in params and "" not in possible[param]:
            return {"valid": False, "error": [f"Optional parameter {param!r} not provided and not marked as optional."],
                    "error_type": "simple_function_checker:missing_optional"}
    return result


def _parallel_no_order(functions: Any, output: Sequence[Any], possible_answers: Sequence[Any]) -> dict[str, Any]:
    if len(output) != len(possible_answers):
        return {"valid": False, "error": ["Wrong number of functions."],
                "error_type": "parallel_function_checker_no_order:wrong_count"}
    matched: list[int] = []
    for i, possible in enumerate(possible_answers):
        description = _find_description(functions, list(possible)[0])
        errors: list[Any] = []
        result: dict[str, Any] = {"valid": False}
        for index, item in enumerate(output):
            if index in matched:
                continue
            result = _simple(description, item, possible)
            if result["valid"]:
                matched.append(index)
                break
            errors.append({f"Model Result Index {index}": {"sub_error": result["error"],
                                                           "sub_error_type": result["error_type"],
                                                           "model_output_item": item, "possible_answer_item": possible}})
        if not result["valid"]:
            considered = [k for k in range(len(output)) if k not in matched]
            errors.insert(0, f"Could not find a matching function among index {considered} of model output for "
                             f"index {i} of possible answers.")
            return {"valid": False, "error": errors, "error_type": "parallel_function_checker_no_order:cannot_find_match"}
    return {"valid": True, "error": []}


def _multiple(functions: Any, output: Sequence[Any], possible_answers: Sequence[Any]) -> dict[str, Any]:
    if len(output) != len(possible_answers):
        return {"valid": False, "error": ["Wrong number of functions."],
                "error_type": "multiple_function_checker:wrong_count"}
    description = _find_description(functions, list(possible_answers[0])[0])
    return _simple(description, output[0], possible_answers[0])


class BFCLEnv(_BFCLBase):
    """BFCL v4 single-turn AST tasks: one question, one reply of calls, scored like BFCL.

    ## Description

    Each episode is one BFCL entry: a question and the docs of one or more functions. The
    model's reply is its answer: the calls it writes are read with :mod:`ast` (never run) and
    scored by BFCL's AST checker (:func:`ast_check`, a port checked against ``bfcl-eval``'s):
    the right functions, every required parameter, each value among the allowed ones (strings
    compared case- and punctuation-insensitively), in any order for ``parallel`` categories. In
    ``irrelevance`` no function fits, and the episode succeeds when the reply makes no call.
    Positional arguments are bound to parameter names (BFCL's decoder drops them).

    ## Action Space

    ``AnyText(16384)``: ``"python"`` (default) ``[spotify.play(artist='Taylor Swift', duration=20)]``
    or ``"json"`` ``<tool_call>...</tool_call>`` tags; any other text is a reply without calls.
    A malformed call list is a format error (the observation says what was wrong).

    ## Observation Space

    ``AnyText(262144)``. After ``reset``: BFCL's system prompt with the function docs (python
    protocol) and the question. After the reply: ``""``.

    ## Rewards

    ``answer_correct`` 1.0 when BFCL's check passes, ``format_error`` −0.1; the other base
    terms have weight 0. No call is executed, so ``call_*`` terms stay 0.

    ## Episode End

    Terminates on the reply, whatever it is: one reply per task, as in BFCL; ``info["bfcl"]`` holds
    the checker's result and the parsed calls. A reply that cannot be decoded is BFCL's decoder
    failure (wrong, except in ``irrelevance``) and also sets ``format_error``. The registered step
    limit (2) is never reached, so an episode is never both terminated and truncated.

    ## Arguments

    - ``category``: ``"simple_python"``, ``"multiple"``, ``"parallel"``, ``"parallel_multiple"``
      or ``"irrelevance"``.
    - ``protocol``, ``reward_weights``, ``render_mode``: see :class:`toolenv.core.ToolEnv`.

    ## Registered Configurations

    ``toolenv/BFCL-v0`` (``category="simple_python"``); the other categories by kwarg.

    ## Version History

    - v0: initial version (BFCL v4 data of ``bfcl-eval==2026.3.23``). Fixed without a version bump: the
      one-step episode is no longer also flagged truncated (the registered step limit is 2, never
      reached), and an undecodable reply terminates the episode as BFCL's decoder failure instead of
      being truncated (the same reward, -0.1).

    ## Example

    >>> import gymnasium as gym, pytest, toolenv
    >>> _ = pytest.importorskip("bfcl_eval")  # the example needs bfcl-eval
    >>> env = gym.make("toolenv/BFCL-v0")
    >>> obs, info = env.reset(options={"index": 0})
    >>> info["prompt"]
    'Find the area of a triangle with a base of 10 units and height of 5 units.'
    >>> obs, reward, terminated, truncated, info = env.step("[calculate_triangle_area(base=10, height=5)]")
    >>> terminated, info["success"], reward
    (True, True, 1.0)
    """

    def __init__(
        self,
        category: str = "simple_python",
        *,
        protocol: str | Protocol = "python",
        reward_weights: Mapping[str, float] | None = None,
        render_mode: str | None = None,
    ) -> None:
        tasks = load_bfcl_single_turn(category)
        super().__init__(tasks, [], protocol=protocol, reward_weights=reward_weights, render_mode=render_mode)
        self._init_bfcl()
        self.category = category
        self._reply_calls: tuple[ToolCall, ...] = ()
        self._verdict: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"BFCLEnv(category={self.category!r}, protocol={self.protocol.name!r})"

    def _prompt(self, task: Task) -> str:
        docs = task.meta["functions"]
        signatures = {d["name"]: list(d["parameters"].get("properties", {})) for d in docs}
        self._set_tools([BFCLTool(d) for d in docs], docs, signatures)
        self._reply_calls = ()
        self._verdict = {}
        self._reply_error: str | None = None
        return task.question

    def _parse(self, action: Any) -> Action:
        # In BFCL's single-turn categories the reply is the answer: its calls are scored, not run.
        parsed = super()._parse(action)
        self._reply_error = None
        if parsed.kind == "call":
            self._reply_calls = parsed.calls
            return Action("answer", answer=str(action).strip(), thought=parsed.thought)
        self._reply_calls = ()
        if parsed.kind == "invalid":  # the one reply could not be decoded: it is still the reply
            self._reply_error = parsed.error
            return Action("answer", answer=action.strip() if isinstance(action, str) else "", thought=None)
        return parsed

    def _on_answer(self, answer: str) -> tuple[dict[str, float], bool, str]:
        assert self.task is not None
        calls = self._reply_calls
        if self._reply_error is not None:
            # BFCL scores an undecodable reply as a decoder failure: wrong, except in irrelevance
            valid = self.category == "irrelevance"
            self._verdict = {"valid": valid, "error": [f"Could not decode the reply: {self._reply_error}"],
                             "error_type": "ast_decoder:decoder_failed", "calls": []}
            self._num_errors += 1
            return {"answer_correct": float(valid), "format_error": 1.0}, True, f"Invalid action: {self._reply_error}"
        if self.category == "irrelevance":
            verdict: dict[str, Any] = {"valid": not calls}
            if calls:
                verdict.update(error=["Valid syntax. Successfully decode AST when it should not."],
                               error_type="irrelevance_error:decoder_success")
        elif not calls:
            verdict = {"valid": False, "error": ["The reply has no function calls."], "error_type": "ast_decoder:decoder_failed"}
        else:
            output = [{c.name: dict(c.arguments)} for c in calls]
            verdict = ast_check(self.task.meta["functions"], output, self.task.meta["ground_truth"], self.category)
        self._verdict = {**verdict, "calls": [c.to_dict() for c in calls]}
        return {"answer_correct": float(verdict["valid"])}, True, ""

    def _episode_end_info(self) -> dict[str, Any]:
        return {"bfcl": copy.deepcopy(self._verdict)}

    def gold_actions(self, task: Task | None = None) -> list[str]:
        """One reply: the ground truth's calls (first allowed values), or a refusal for irrelevance."""
        task = task or self.task
        if task is None or not task.solution:
            return super().gold_actions(task)
        return [self._format_calls(task.solution)]
