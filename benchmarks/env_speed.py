"""``toolenv bench env``: how fast the environments step under scripted actions.

Each env and protocol plays scripted episodes — reset, one calculator call, final answer —
and we report episodes and steps per second through ``gym.make`` (with Gymnasium's wrappers),
on the bare env, and through a ``SyncVectorEnv`` of 8. As a reference measured in the same run,
the bare work of an episode (the first gold call's tool function on the same arguments plus the answer
check, with no env) gives the env's overhead as a ratio.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym

import toolenv
from rewards.math import numeric_match
from toolenv.types import ToolCall

__all__ = ["bench_env", "format_table", "main"]

DEFAULT_PROTOCOLS = ("trice", "react", "json")
_SCRIPTS = 256  # distinct tasks cycled through


def _scripts(env: Any, n: int) -> list[tuple[int, str, str, ToolCall]]:
    """(task index, call action, answer action, the call) for the first ``n`` tasks: the first gold call, then the answer."""
    base = env.unwrapped
    out = []
    for i in range(min(n, len(base.tasks))):
        task = base.tasks[i]
        call = task.solution[0] if task.solution else ToolCall("calculator", {"expression": task.answer})
        out.append((i, base.protocol.format_call(call), base.protocol.format_answer(task.answer), call))
    return out


def _run(env: Any, scripts: Sequence[tuple[int, str, str, ToolCall]], episodes: int) -> tuple[float, int, int]:
    steps = solved = 0
    start = time.perf_counter()
    for e in range(episodes):
        index, call, answer, _ = scripts[e % len(scripts)]
        env.reset(options={"index": index})
        env.step(call)
        _, _, terminated, _, info = env.step(answer)
        steps += 2
        solved += bool(info["success"])
    return time.perf_counter() - start, steps, solved


def _run_bare(env: Any, scripts: Sequence[tuple[int, str, str, ToolCall]], answers: Sequence[str], episodes: int) -> float:
    """The same work without the env: the tool function on the gold arguments, then the answer check."""
    tools = env.unwrapped.tools
    start = time.perf_counter()
    for e in range(episodes):
        k = e % len(scripts)
        call = scripts[k][3]
        value = tools[call.name].fn(**dict(call.arguments)) if call.positional is None else tools[call.name].fn(call.positional)
        numeric_match([answers[k]], answer=[answers[k]], tool_value=[value])
    return time.perf_counter() - start


def _run_vector(env_id: str, kwargs: dict[str, Any], scripts: Sequence[tuple[int, str, str, ToolCall]], episodes: int, num_envs: int = 8) -> float:
    venv = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", **kwargs)
    rounds = max(1, episodes // num_envs)
    start = time.perf_counter()
    venv.reset(seed=0)
    for r in range(rounds):
        batch = [scripts[(r * num_envs + j) % len(scripts)] for j in range(num_envs)]
        venv.step([b[1] for b in batch])
        venv.step([b[2] for b in batch])  # answers end the episodes; autoreset follows on the next step
        venv.step(["" for _ in batch])  # the autoreset step (next-step mode) is a reset, not an action
    elapsed = time.perf_counter() - start
    venv.close()
    return rounds * num_envs / elapsed


def bench_env(
    env_ids: Sequence[str] | None = None,
    *,
    protocols: Sequence[str] = DEFAULT_PROTOCOLS,
    episodes: int = 5_000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Measure every env id (default: every registered id whose data loads) under each protocol.

    Returns one row per (env, protocol) with ``episodes_per_s``, ``steps_per_s``,
    ``bare_env_episodes_per_s``, ``vector_episodes_per_s``, ``reference_episodes_per_s`` (the
    tool call and answer check alone) and ``overhead_x`` (reference / env speed).
    """
    if env_ids is None:
        # held-out copies would only repeat their train id; BFCL's tools change with every task
        env_ids = [i for i in toolenv.ENV_INFO if not i.endswith(("-Test-v0", "-Valid-v0")) and not i.startswith("toolenv/BFCL")]
    rows: list[dict[str, Any]] = []
    for env_id in env_ids:
        for protocol in protocols:
            try:
                env = gym.make(env_id, protocol=protocol)
            except FileNotFoundError as e:
                rows.append({"env": env_id, "protocol": protocol, "skipped": str(e).splitlines()[0]})
                break
            env.reset(seed=seed)
            scripts = _scripts(env, _SCRIPTS)
            answers = [env.unwrapped.tasks[s[0]].answer for s in scripts]  # type: ignore[attr-defined]
            _run(env, scripts, min(200, episodes))  # warm-up: caches, first-call checks
            elapsed, steps, solved = _run(env, scripts, episodes)
            bare_elapsed, _, _ = _run(env.unwrapped, scripts, episodes)
            ref_elapsed = _run_bare(env, scripts, answers, episodes)
            vector = _run_vector(env_id, {"protocol": protocol}, scripts, min(episodes, 2_000))
            env.close()
            rows.append(
                {
                    "env": env_id,
                    "protocol": protocol,
                    "episodes": episodes,
                    "solved": solved / episodes,
                    "episodes_per_s": episodes / elapsed,
                    "steps_per_s": steps / elapsed,
                    "bare_env_episodes_per_s": episodes / bare_elapsed,
                    "vector_episodes_per_s": vector,
                    "reference_episodes_per_s": episodes / ref_elapsed,
                    "overhead_x": (episodes / ref_elapsed) / (episodes / elapsed),
                }
            )
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of :func:`bench_env` rows."""
    head = "| env | protocol | episodes/s | steps/s | bare env ep/s | vector(8) ep/s | tool+check ep/s | env cost (x ref) | solved |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['env']} | - | skipped: {r['skipped']} | | | | | | |")
            continue
        lines.append(
            f"| {r['env']} | {r['protocol']} | {r['episodes_per_s']:,.0f} | {r['steps_per_s']:,.0f} |"
            f" {r['bare_env_episodes_per_s']:,.0f} | {r['vector_episodes_per_s']:,.0f} |"
            f" {r['reference_episodes_per_s']:,.0f} | {r['overhead_x']:.1f} | {r['solved']:.0%} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``toolenv bench env [--env ID ...] [--episodes N]``: print the table."""
    import argparse

    parser = argparse.ArgumentParser(prog="toolenv bench env", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--env", action="append", default=[], metavar="ID", help="env id (repeatable; default: every train id whose data loads)")
    parser.add_argument("--protocol", action="append", default=[], choices=list(DEFAULT_PROTOCOLS), help="protocol (repeatable; default: all)")
    parser.add_argument("--episodes", type=int, default=5_000, help="scripted episodes per env and protocol")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = bench_env(args.env or None, protocols=args.protocol or DEFAULT_PROTOCOLS, episodes=args.episodes, seed=args.seed)
    print(format_table(rows))  # the CLI layer's output
    return 0
