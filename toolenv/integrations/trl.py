"""toolenv envs in TRL's ``GRPOTrainer(environment_factory=...)`` (TRL >= 1.16).

TRL plays the episode itself: it renders the env's tools into the chat template, parses the
model's tool calls with the template's response parser, calls the matching public methods of an
environment instance, and scores the rollout with the instance's ``get_reward()``.
:func:`environment_factory` builds that class for any registered id:

- ``reset(**row)`` resets the toolenv env on the row's task (``index`` or ``task_id``; a sampled
  task otherwise) and returns the user prompt (instruction and question), which TRL appends to
  the row's last user message;
- one public method per tool of the env, typed and documented from the tool's schema, so TRL
  shows it to the model; calling it steps the env with that call as a structured action
  (:mod:`toolenv.protocols.structured`) and returns the tool's output — the same rewards, terms
  and errors as the equivalent text action;
- ``final_answer(answer)``, through which the model submits its answer: the env scores it (a
  rollout that never calls it is scored without an answer, as a truncated episode);
- ``get_reward()``: the episode's return under the env's reward weights.

:func:`reset_dataset` gives the rows for a split (a ``datasets.Dataset`` with ``prompt`` and
``index``), and :func:`metrics_reward_func` logs every reward term, the hindsight step rewards
and the episode metrics by name through TRL's ``log_metric`` (it returns 0, so it adds nothing to
the reward; give it weight 0 or leave it at 1). Example::

    from trl import GRPOConfig, GRPOTrainer
    from toolenv.integrations.trl import environment_factory, metrics_reward_func, reset_dataset

    trainer = GRPOTrainer(model="Qwen/Qwen2.5-0.5B-Instruct", train_dataset=reset_dataset("toolenv/Math-v0", episodes=512),
                          environment_factory=environment_factory("toolenv/Math-v0"), reward_funcs=[metrics_reward_func],
                          args=GRPOConfig(max_completion_length=256))
"""

from __future__ import annotations

import inspect
import keyword
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from toolenv.integrations.export import episode_report

__all__ = ["environment_factory", "metrics_reward_func", "reset_dataset"]

_JSON_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool, "array": list, "object": dict}
_RESERVED = {"reset", "get_reward", "final_answer", "env", "report"}


def _python_type(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    return _JSON_TYPES.get(str(kind), str)


def _tool_method(tool_name: str, method_name: str, schema: dict[str, Any]) -> Callable[..., str]:
    """A method that steps the env with one call of ``tool_name``; signature and Google docstring from the tool's schema."""
    fn_schema = schema.get("function", schema)
    params = fn_schema.get("parameters", {}) or {}
    properties: dict[str, Any] = params.get("properties", {}) or {}
    required = set(params.get("required", []) or [])

    def method(self: Any, **kwargs: Any) -> str:
        return self._call(tool_name, kwargs)

    sig_params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    annotations: dict[str, Any] = {}
    arg_lines = []
    for name, prop in properties.items():
        tp = _python_type(prop)
        annotations[name] = tp
        default = inspect.Parameter.empty if name in required else None
        sig_params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=tp))
        arg_lines.append(f"    {name}: {str(prop.get('description') or name).strip() or name}")
    annotations["return"] = str
    method.__signature__ = inspect.Signature(sig_params, return_annotation=str)  # type: ignore[attr-defined]
    method.__annotations__ = annotations
    method.__name__ = method.__qualname__ = method_name
    description = str(fn_schema.get("description") or f"Call {tool_name}.").strip()
    method.__doc__ = description + ("\n\nArgs:\n" + "\n".join(arg_lines) if arg_lines else "") + "\n\nReturns:\n    The tool's output."
    return method


def environment_factory(env_id: str, **env_kwargs: Any) -> type:
    """A class TRL instantiates once per rollout (``environment_factory=`` takes it as is): see the module docstring."""
    import toolenv

    toolenv.check_env_args(env_id, env_kwargs)
    probe = gym.make(env_id, **env_kwargs)
    schemas = probe.unwrapped.tool_schemas  # type: ignore[attr-defined]
    probe.close()

    def __init__(self: Any) -> None:
        self.env = gym.make(env_id, **env_kwargs)
        self.report: dict[str, Any] | None = None

    def reset(self: Any, **row: Any) -> str:
        options = {k: row[k] for k in ("index", "task_id") if row.get(k) is not None}
        _, info = self.env.reset(seed=row.get("seed"), options=options or None)
        self.report = None
        return str(info["prompt"])

    def _step(self: Any, action: Any) -> str:
        base = self.env.unwrapped
        if base.task is None or base._done or self.report is not None:
            return "The task is over: no more tool calls or answers are taken."
        obs, _, terminated, truncated, _ = self.env.step(action)
        if terminated or truncated:
            self.report = episode_report(self.env)
        return str(obs)

    def _call(self: Any, tool_name: str, arguments: dict[str, Any]) -> str:
        return self._step([{"name": tool_name, "arguments": {k: v for k, v in arguments.items() if v is not None}}])

    def final_answer(self: Any, answer: str) -> str:
        """Submit the final answer to the user's question. This ends the task: call it once, last.

        Args:
            answer: The answer, e.g. a number or a short phrase.

        Returns:
            A confirmation.
        """
        self._step({"role": "assistant", "content": str(answer)})
        return "Answer submitted."

    def get_reward(self: Any) -> float:
        """The episode's return under the env's reward weights."""
        return float(self._episode()["return"])

    def episode(self: Any) -> dict[str, Any]:
        """:func:`toolenv.integrations.export.episode_report` of this rollout."""
        return self.report if self.report is not None else episode_report(self.env)

    namespace: dict[str, Any] = {"__init__": __init__, "reset": reset, "_step": _step, "_call": _call, "final_answer": final_answer,
                                 "get_reward": get_reward, "_episode": episode, "env_id": env_id,
                                 "__doc__": f"{env_id} for TRL's GRPOTrainer(environment_factory=...)."}
    for schema in schemas:
        tool_name = str(schema.get("function", schema)["name"])
        method_name = tool_name if tool_name.isidentifier() and not keyword.iskeyword(tool_name) else "tool_" + "".join(
            c if c.isalnum() else "_" for c in tool_name)
        if method_name in _RESERVED or method_name.startswith("_"):
            method_name = f"tool_{method_name.lstrip('_')}"
        namespace[method_name] = _tool_method(tool_name, method_name, schema)
    class_name = "ToolEnv_" + "".join(c if c.isalnum() else "_" for c in env_id.split("/")[-1])
    return type(class_name, (), namespace)


def reset_dataset(env_id: str, *, episodes: int | None = None, **env_kwargs: Any) -> Any:
    """TRL rows for the env's split: ``{"prompt": [{"role": "user", "content": ""}], "index": i}`` for its first ``episodes`` tasks.

    The question comes from ``reset``, which TRL appends to that user message.
    """
    from datasets import Dataset

    env = gym.make(env_id, **env_kwargs)
    n = len(env.unwrapped.tasks)  # type: ignore[attr-defined]
    env.close()
    n = n if episodes is None else min(n, episodes)
    if n < 1:
        raise ValueError(f"Expected episodes >= 1, got {episodes}.")
    return Dataset.from_dict({"prompt": [[{"role": "user", "content": ""}] for _ in range(n)], "index": list(range(n))})


def metrics_reward_func(completions: list[Any], environments: list[Any] | None = None, log_metric: Callable[..., Any] | None = None,
                        **kwargs: Any) -> list[float]:
    """Log each reward term, the hindsight step rewards and the episode metrics by name; return 0 for every rollout.

    Names (means over the batch): ``toolenv/<term>`` for each weighted term summed over the episode,
    ``toolenv/step_reward`` (mean hindsight step reward), ``toolenv/success``, ``toolenv/num_tool_calls``,
    ``toolenv/num_format_errors``, ``toolenv/turns``.
    """
    envs = [e for e in (environments or []) if hasattr(e, "_episode")]
    if envs and log_metric is not None:
        reports = [e._episode() for e in envs]
        for term in reports[0]["terms"]:
            log_metric(f"toolenv/{term}", sum(r["terms"][term] for r in reports) / len(reports))
        steps = [x for r in reports for x in (r["step_rewards"] or [])]
        if steps:
            log_metric("toolenv/step_reward", sum(steps) / len(steps))
        for name in ("success", "num_tool_calls", "num_format_errors", "turns"):
            log_metric(f"toolenv/{name}", sum(float(r[name]) for r in reports) / len(reports))
    return [0.0] * len(completions)
