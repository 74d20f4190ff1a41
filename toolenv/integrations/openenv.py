"""``toolenv serve ENV_ID``: any toolenv env behind OpenEnv's server (meta-pytorch/OpenEnv, the ``openenv-core`` package).

OpenEnv is the integration point TRL, verifiers, SkyRL and NeMo Gym document for remote envs: a
FastAPI server whose WebSocket ``/ws`` gives each client its own env session (reset, step, state),
plus an MCP route (``/mcp``, JSON-RPC ``tools/list`` / ``tools/call``). :func:`create_app` serves a
registered id: every session is its own ``gym.make(env_id, **env_kwargs)``, at most
``max_sessions`` at once (OpenEnv refuses more with its capacity error; a closed or dropped
connection frees its slot).

Actions (:class:`ToolEnvAction`) are the env's own: ``text`` in its protocol, or tool calls a
trainer already parsed (``tool_calls``, with ``content``), the structured form of
:mod:`toolenv.protocols.structured`. Observations (:class:`ToolEnvObservation`) carry the text the
model sees, the step's reward and ``done``, and in ``metadata`` everything toolenv knows — the
weighted ``reward_terms`` and ``reward_raw`` of the step, the env's ``info`` (JSON-safe), and at the
end of an episode the ``episode`` report of :func:`toolenv.integrations.export.episode_report`
(summed terms, per-step rewards, hindsight ``step_rewards``, success, counts). The env's tools
are also listed and callable over MCP (with ``final_answer(answer)`` to answer): a call through
``tools/call`` is a step of that session's env with that call, scored like any other; MCP has no
reset, so a call with no episode running starts one on a sampled task.
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym

from toolenv.integrations.export import episode_report

__all__ = ["ToolEnvAction", "ToolEnvObservation", "create_app", "make_environment_class", "serve"]

try:
    from openenv.core.env_server import Action, Observation, State
    from openenv.core.env_server.mcp_environment import MCPEnvironment
    from pydantic import Field
except ImportError:  # the optional extra is absent: the module imports, and its functions say what to install
    Action = Observation = State = MCPEnvironment = None  # type: ignore[assignment,misc]

    def Field(*args: Any, **kwargs: Any) -> Any:  # type: ignore[no-redef]  # noqa: N802
        return None


def _require() -> None:
    if MCPEnvironment is None:
        raise ImportError("toolenv's OpenEnv server needs the openenv-core package: pip install 'toolenv[openenv]' (or openenv-core)")


_Base: Any = Action if Action is not None else object
_ObsBase: Any = Observation if Observation is not None else object


class ToolEnvAction(_Base):
    """One step: ``text`` in the env's protocol, or ``tool_calls`` already parsed (with optional ``content``).

    Exactly one of the forms: ``{"text": "calculator(2+3)"}``, ``{"tool_calls": [{"name": "calculator",
    "arguments": {"expression": "2+3"}}]}`` (OpenAI's ``{"type": "function", "function": {...}}`` too), or
    ``{"content": "5"}`` (an assistant message without calls: the final answer).
    """

    text: str | None = Field(default=None, description="the action as text in the env's protocol")
    tool_calls: list[dict[str, Any]] | None = Field(default=None, description="tool calls already parsed: {name, arguments} or OpenAI's form")
    content: str | None = Field(default=None, description="assistant text: the thought with tool_calls, the final answer without")


class ToolEnvObservation(_ObsBase):
    """What the model sees (``text``), with ``reward``, ``done``, and toolenv's terms and report in ``metadata``.

    OpenEnv's wire format leaves ``metadata`` out (``serialize_observation``), so the same dict
    also travels as the ``toolenv`` field, which every client receives.
    """

    text: str = Field(default="", description="the observation text (the prompt after reset, the tool output or error after a step)")
    toolenv: dict[str, Any] = Field(default_factory=dict, description="reward terms, env info and, at the end, the episode report")


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr))


def _env_action(action: ToolEnvAction) -> Any:
    """The toolenv action of an OpenEnv action: text, a call list, or an assistant message."""
    forms = [action.text is not None, action.tool_calls is not None]
    if sum(forms) > 1:
        return {"role": "assistant", "content": None, "tool_calls": [], "__invalid__": "both text and tool_calls"}
    if action.text is not None:
        return action.text
    if action.tool_calls is not None:
        return {"role": "assistant", "content": action.content, "tool_calls": action.tool_calls}
    return {"role": "assistant", "content": action.content or ""}


def make_environment_class(env_id: str, env_kwargs: dict[str, Any] | None = None) -> type:
    """An OpenEnv ``Environment`` class (an ``MCPEnvironment``) whose instances each hold one ``gym.make(env_id, **env_kwargs)``."""
    import toolenv

    _require()
    kwargs = dict(env_kwargs or {})
    toolenv.check_env_args(env_id, kwargs)

    class ToolEnvEnvironment(MCPEnvironment):  # type: ignore[misc]
        SUPPORTS_CONCURRENT_SESSIONS = True

        def __init__(self) -> None:
            from fastmcp import FastMCP

            self.env = gym.make(env_id, **kwargs)
            self._episode_id: str | None = None
            self._steps = 0
            server = FastMCP(f"toolenv {env_id}")
            for schema in [*self.env.unwrapped.tool_schemas, {"function": _FINAL_ANSWER}]:  # type: ignore[attr-defined]
                server.add_tool(_mcp_tool(self, schema))
            super().__init__(server)

        def reset(self, seed: int | None = None, episode_id: str | None = None, **options: Any) -> ToolEnvObservation:
            picked = {k: options[k] for k in ("index", "task_id") if options.get(k) is not None}
            obs, info = self.env.reset(seed=seed, options=picked or None)
            self._episode_id, self._steps = episode_id, 0
            base: Any = self.env.unwrapped
            return _observation(str(obs), 0.0, False, {"task": info["task"], "prompt": info["prompt"], "tools": info["tools"],
                                                       "messages": list(base.messages)})

        def _step_impl(self, action: Any, timeout_s: float | None = None, **kwargs: Any) -> ToolEnvObservation:
            if not isinstance(action, ToolEnvAction):
                action = ToolEnvAction.model_validate(action if isinstance(action, dict) else getattr(action, "model_dump", dict)())
            return self.play(_env_action(action))

        def play(self, env_action: Any, *, start: bool = False) -> ToolEnvObservation:
            """Step the env; a step before reset or after the end is an observation saying so, not an error.

            ``start`` (MCP calls, which have no reset): with no episode running, start one on a sampled task first.
            """
            base: Any = self.env.unwrapped
            if start and (base.task is None or base._done):
                self.reset()
            if base.task is None or base._done:
                return _observation("The episode is over: reset to start another.", 0.0, True,
                                    {"error": "step after the end of the episode (or before reset)"})
            obs, reward, terminated, truncated, info = self.env.step(env_action)
            self._steps += 1
            done = bool(terminated or truncated)
            metadata = {"reward_terms": info.get("reward_terms", {}), "reward_raw": info.get("reward_raw", {}), "terminated": bool(terminated),
                        "truncated": bool(truncated), "info": {k: v for k, v in info.items() if k not in ("reward_terms", "reward_raw")}}
            if done:
                metadata["episode"] = episode_report(self.env)
            return _observation(str(obs), float(reward), done, metadata)

        @property
        def state(self) -> State:
            return State(episode_id=self._episode_id, step_count=self._steps)

        def close(self) -> None:
            self.env.close()

    ToolEnvEnvironment.__name__ = ToolEnvEnvironment.__qualname__ = "ToolEnv_" + "".join(c if c.isalnum() else "_" for c in env_id.split("/")[-1])
    return ToolEnvEnvironment


def _observation(text: str, reward: float, done: bool, extra: dict[str, Any]) -> ToolEnvObservation:
    safe = _json_safe(extra)
    return ToolEnvObservation(text=text, reward=reward, done=done, metadata=safe, toolenv=safe)


_FINAL_ANSWER = {"name": "final_answer", "description": "Submit the final answer to the user's question. This ends the episode.",
                 "parameters": {"type": "object", "properties": {"answer": {"type": "string", "description": "the answer"}}, "required": ["answer"]}}


def _mcp_tool(session: Any, schema: dict[str, Any]) -> Any:
    """A FastMCP tool with the env tool's name, description and JSON schema; calling it steps the session's env."""
    from fastmcp.tools import Tool as MCPTool

    fn_schema = schema.get("function", schema)
    name = str(fn_schema["name"])

    class EnvTool(MCPTool):  # type: ignore[misc]
        async def run(self, arguments: dict[str, Any]) -> Any:
            action: Any = ({"role": "assistant", "content": str(arguments.get("answer", ""))} if name == "final_answer"
                           else [{"name": name, "arguments": dict(arguments)}])
            observation = session.play(action, start=True)
            return self.convert_result({"output": observation.text, "reward": observation.reward, "done": observation.done,
                                        "metadata": observation.metadata})

    return EnvTool(name=name, description=str(fn_schema.get("description") or name), parameters=fn_schema.get("parameters") or {"type": "object"})


def create_app(env_id: str, *, env_kwargs: dict[str, Any] | None = None, max_sessions: int = 8) -> Any:
    """OpenEnv's FastAPI app serving ``env_id``: one env per WebSocket session, at most ``max_sessions`` at once."""
    from openenv.core.env_server import create_app as openenv_create_app

    if max_sessions < 1:
        raise ValueError(f"Expected max_sessions >= 1, got {max_sessions}.")
    cls = make_environment_class(env_id, env_kwargs)
    return openenv_create_app(cls, ToolEnvAction, ToolEnvObservation, env_name=env_id.split("/")[-1], max_concurrent_envs=max_sessions)


def serve(env_id: str, *, host: str = "127.0.0.1", port: int = 8000, max_sessions: int = 8, env_kwargs: dict[str, Any] | None = None) -> None:
    """Run the server until interrupted (what ``toolenv serve`` does)."""
    import uvicorn

    uvicorn.run(create_app(env_id, env_kwargs=env_kwargs, max_sessions=max_sessions), host=host, port=port, log_level="warning")
