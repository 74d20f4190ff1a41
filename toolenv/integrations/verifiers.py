"""toolenv envs in verifiers v1 (prime-rl's environment library): a taskset and an env for any registered id.

verifiers v1 runs an episode as an ``Env.run(task, agents)`` in which the env plays the user: it
opens the model's interaction, reads each reply, and answers with the next user turn (its
TextArena and OpenEnv tasksets work this way). Here the env steps a toolenv env host-side:

- :class:`ToolEnvTaskset` yields one task per task of the env's split (``env_id``, ``env_kwargs``,
  ``episodes`` in its config), with the env's system prompt (protocol and tools) and question;
- :class:`ToolEnvVerifiersEnv` plays it: every reply is a ``step``, the observation is the next user
  turn, an answer (or the env's step limit) ends the exchange; then each weighted reward term,
  summed over the episode, is recorded as its own named reward (``trace.record_reward(term, value)``:
  verifiers logs each by name and scores their sum, the episode's return), the episode metrics as
  ``trace.metrics`` (``success``, ``num_tool_calls``, ``num_format_errors``, ``turns``) and the
  hindsight ``step_rewards`` and per-step rewards in ``trace.info``.

The top-level module ``toolenv_verifiers`` is the verifiers taskset package (it exports one
``Taskset`` and one ``Env`` subclass), so ``vf-eval toolenv_verifiers --env.taskset.env-id
toolenv/Math-v0 --env.player.runtime.type subprocess`` evaluates it through verifiers' own runtime
(its ``null`` chat harness, prepared by ``uv``), and :func:`load_environment` builds the env from Python.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gymnasium as gym

from toolenv.integrations.export import episode_report

__all__ = ["ToolEnvTaskset", "ToolEnvVerifiersEnv", "load_environment", "play"]

try:
    import verifiers.v1 as vf
    from pydantic import Field
except ImportError:  # the optional package is absent: the module imports, load_environment says what to install
    vf = None  # type: ignore[assignment]


def _require() -> None:
    if vf is None:
        raise ImportError("toolenv's verifiers env needs the verifiers package: pip install verifiers")


async def play(env: gym.Env, player: Any, task: Any, index: int) -> dict[str, Any]:
    """One episode of ``env`` on task ``index`` with verifiers' ``player``; returns the episode report (and records it on the trace)."""
    env.reset(options={"index": index})
    async with player.interaction(task) as interaction:
        segment = await interaction.turn()
        while not segment.terminated:
            obs, _, terminated, truncated, _ = env.step(segment.last_reply)
            if terminated or truncated:
                break
            segment = await interaction.turn(str(obs))
    report = episode_report(env)
    trace = interaction.trace
    for term, value in report["terms"].items():
        trace.record_reward(term, float(value), 1.0)
    for name in ("success", "num_tool_calls", "num_format_errors", "turns"):
        trace.metrics[name] = float(report[name])
    trace.info["toolenv"] = {"rewards": report["rewards"], "step_rewards": report["step_rewards"], "return": report["return"]}
    return report


if vf is not None:

    class ToolEnvTasksetConfig(vf.TasksetConfig):  # type: ignore[misc,name-defined]
        env_id: str = "toolenv/Math-v0"
        """A registered toolenv id."""
        env_kwargs: dict[str, Any] = Field(default_factory=dict)
        """Keyword arguments of ``gym.make``."""
        episodes: int | None = None
        """The first N tasks of the split (default all)."""

    class ToolEnvData(vf.TaskData):  # type: ignore[misc,name-defined]
        env_id: str
        env_kwargs: dict[str, Any]
        index: int

    class ToolEnvTask(vf.Task[ToolEnvData]):  # type: ignore[misc,name-defined]
        pass

    class ToolEnvTaskset(vf.Taskset[ToolEnvTask, ToolEnvTasksetConfig]):  # type: ignore[misc,name-defined]
        def load(self) -> Iterator[ToolEnvTask]:
            cfg = self.config
            env = gym.make(cfg.env_id, **cfg.env_kwargs)
            n = len(env.unwrapped.tasks)  # type: ignore[attr-defined]
            n = n if cfg.episodes is None else min(n, cfg.episodes)
            for i in range(n):
                _, info = env.reset(options={"index": i})
                yield ToolEnvTask(ToolEnvData(name=f"{cfg.env_id}#{i}", id=str(info["task"]["id"]), prompt=str(info["prompt"]),
                                              system_prompt=str(env.unwrapped.system_prompt), env_id=cfg.env_id,  # type: ignore[attr-defined]
                                              env_kwargs=dict(cfg.env_kwargs), index=i), cfg.task)
            env.close()

    class ToolEnvEnvConfig(vf.EnvConfig):  # type: ignore[misc,name-defined]
        player: vf.AgentConfig = vf.AgentConfig(harness={"id": "null"})  # type: ignore[name-defined]

    class ToolEnvVerifiersEnv(vf.Env[ToolEnvEnvConfig]):  # type: ignore[misc,name-defined]
        async def run(self, task: Any, agents: Any) -> None:
            data = task.data
            env = gym.make(data.env_id, **data.env_kwargs)
            try:
                await play(env, agents.player, task, data.index)
            finally:
                env.close()
else:  # pragma: no cover - without verifiers the names exist and say what to install
    ToolEnvTaskset = ToolEnvVerifiersEnv = None  # type: ignore[assignment,misc]


def load_environment(env_id: str, *, episodes: int | None = None, **env_kwargs: Any) -> Any:
    """A verifiers ``Env`` playing ``env_id`` (its taskset: the split's first ``episodes`` tasks)."""
    _require()
    import toolenv

    toolenv.check_env_args(env_id, env_kwargs)
    config = ToolEnvEnvConfig(taskset=ToolEnvTasksetConfig(id="toolenv_verifiers", env_id=env_id, env_kwargs=env_kwargs, episodes=episodes))
    return ToolEnvVerifiersEnv(config)
