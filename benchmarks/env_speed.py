"""``toolenv bench env``: how fast the environments step under scripted actions.

Each env and protocol plays scripted episodes — reset, then the task's gold actions: its gold
calls and the final answer (one calculator call and the answer on the math envs; two to five
dependent calls on APIChain; per user turn, the turn's calls and a reply on BFCL multi-turn; one
reply of calls on BFCL single-turn) — and we report episodes and steps per second through
``gym.make`` (with Gymnasium's wrappers), on the bare env, and through a ``SyncVectorEnv`` of 8
(each sub-env plays its own task's gold actions). As a reference measured in the same run, the
bare work of the same episodes without the env gives the env's cost as a ratio:

- envs with fixed tools (math, APIChain): each gold call's tool function on the same arguments,
  then the answer check;
- ``toolenv/BFCLMultiTurn-v0``: what BFCL's multi-turn checker does with the same calls — fresh
  API instances for the model and for the ground truth, each turn's calls run on both, BFCL's
  ``state_checker`` and ``response_checker`` after every turn;
- ``toolenv/BFCL-v0``: the AST check of the gold calls (single-turn calls are not executed).

The BFCL envs need the optional ``bfcl-eval`` package; without it their rows say so and are skipped.
"""

from __future__ import annotations

import copy
import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

import toolenv
from rewards.math import numeric_match
from toolenv.cli import ArgumentParser
from toolenv.protocols import PROTOCOLS
from toolenv.types import Task, ToolCall

__all__ = ["bench_server", "format_server_table", "DEFAULT_PROTOCOLS", "FAMILY_PROTOCOLS", "bench_env", "bench_tool_limits", "format_table", "format_tool_limits",
           "main", "protocols_for"]

DEFAULT_PROTOCOLS = ("trice", "react", "json")
#: Protocols of the families whose gold calls need others (by id prefix): APIChain's calls take
#: several arguments, which trice cannot write; BFCL asks for Python-style calls (or JSON).
FAMILY_PROTOCOLS: dict[str, tuple[str, ...]] = {
    "toolenv/APIChain": ("react", "json"),
    "toolenv/BFCL": ("python", "json"),
}
_SCRIPTS = 256  # distinct tasks cycled through


def protocols_for(env_id: str) -> tuple[str, ...]:
    """The protocols an env is measured with by default.

    >>> protocols_for("toolenv/Math-v0"), protocols_for("toolenv/BFCLMultiTurn-v0")
    (('trice', 'react', 'json'), ('python', 'json'))
    """
    for prefix, protocols in FAMILY_PROTOCOLS.items():
        if env_id.startswith(prefix):
            return protocols
    return DEFAULT_PROTOCOLS


@dataclass(frozen=True)
class _Script:
    index: int
    actions: tuple[str, ...]


def _gold_actions(base: Any, task: Task) -> list[str]:
    """The expert's actions; a math task without a verified gold call gets one calculator call on its answer."""
    if not task.solution and "calculator" in base.tools:
        call = ToolCall("calculator", {"expression": task.answer})
        return [base.protocol.format_call(call), base.protocol.format_answer(task.answer)]
    return list(base.gold_actions(task))


def _scripts(env: Any, n: int) -> list[_Script]:
    """The gold actions of the first ``n`` tasks."""
    base = env.unwrapped
    return [_Script(i, tuple(_gold_actions(base, base.tasks[i]))) for i in range(min(n, len(base.tasks)))]


def _run(env: Any, scripts: Sequence[_Script], episodes: int) -> tuple[float, int, int]:
    steps = solved = 0
    info: dict[str, Any] = {}
    start = time.perf_counter()
    for e in range(episodes):
        script = scripts[e % len(scripts)]
        env.reset(options={"index": script.index})
        for action in script.actions:
            _, _, terminated, truncated, info = env.step(action)
            steps += 1
            if terminated or truncated:
                break
        solved += bool(info.get("success"))
    return time.perf_counter() - start, steps, solved


# ---------------------------------------------------------------------------------- references
def _tool_reference(base: Any, scripts: Sequence[_Script]) -> Callable[[int], None]:
    """Each gold call's tool function on its arguments, then the answer check."""
    work = []
    for s in scripts:
        task = base.tasks[s.index]
        calls = task.solution or (ToolCall("calculator", {"expression": task.answer}),)
        work.append(([(base.tools[c.name].fn, c) for c in calls], task.answer))

    def run(k: int) -> None:
        calls, answer = work[k]
        value = None
        for fn, call in calls:
            value = fn(**dict(call.arguments)) if call.positional is None else fn(call.positional)
        numeric_match([answer], answer=[answer], tool_value=[value])

    return run


def _bfcl_instances(meta: dict[str, Any]) -> dict[str, Any]:
    """Fresh API instances with the task's initial config, as BFCL's executor makes them."""
    from bfcl_eval.constants.executable_backend_config import (  # type: ignore[import-untyped]
        CLASS_FILE_PATH_MAPPING,
        STATELESS_CLASSES,
    )

    instances = {}
    for name in meta["involved_classes"]:
        instance = getattr(importlib.import_module(CLASS_FILE_PATH_MAPPING[name]), name)()
        if name not in STATELESS_CLASSES:
            instance._load_scenario(copy.deepcopy(meta["initial_config"].get(name, {})), long_context=bool(meta.get("long_context")))
        instances[name] = instance
    return instances


def _bfcl_multi_turn_reference(base: Any, scripts: Sequence[_Script]) -> Callable[[int], None]:
    """BFCL's multi-turn check of the gold calls: model and ground-truth instances, state and response checks."""
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import (  # type: ignore[import-untyped]
        response_checker,
        state_checker,
    )

    from toolenv.envs.bfcl import execution_text

    def execute(instances: dict[str, Any], call: ToolCall) -> str:
        owner = next(i for i in instances.values() if hasattr(type(i), call.name))
        try:
            return execution_text(getattr(owner, call.name)(**call.arguments))
        except Exception as e:
            return f"Error during execution: {e}"

    work = []
    for s in scripts:
        task = base.tasks[s.index]
        turns, k = [], 0
        for strings in task.meta["ground_truth"]:  # task.solution is every turn's calls in order
            turns.append(task.solution[k : k + len(strings)])
            k += len(strings)
        work.append((task.meta, turns))

    def run(k: int) -> None:
        meta, turns = work[k]
        model, truth = _bfcl_instances(meta), _bfcl_instances(meta)
        results: list[str] = []
        for turn, calls in enumerate(turns):
            if calls:
                truth_results = [execute(truth, c) for c in calls]
                results += [execute(model, c) for c in calls]
                if state_checker(model, truth)["valid"]:
                    response_checker(results, truth_results, turn)

    return run


def _bfcl_ast_reference(base: Any, scripts: Sequence[_Script]) -> Callable[[int], None]:
    """BFCL's AST check of the gold calls."""
    from toolenv.envs.bfcl import ast_check

    work = []
    for s in scripts:
        task = base.tasks[s.index]
        work.append((task.meta["functions"], [{c.name: dict(c.arguments)} for c in task.solution], task.meta["ground_truth"]))

    def run(k: int) -> None:
        functions, output, truth = work[k]
        if output:
            ast_check(functions, output, truth, base.category)

    return run


def _reference(env: Any, scripts: Sequence[_Script]) -> Callable[[int], None]:
    """The work of script ``k``'s episode without the env (see the module docstring)."""
    from toolenv.envs.bfcl import BFCLEnv, BFCLMultiTurnEnv

    base = env.unwrapped
    if isinstance(base, BFCLMultiTurnEnv):
        return _bfcl_multi_turn_reference(base, scripts)
    if isinstance(base, BFCLEnv):
        return _bfcl_ast_reference(base, scripts)
    return _tool_reference(base, scripts)


def _run_reference(run: Callable[[int], None], n_scripts: int, episodes: int) -> float:
    start = time.perf_counter()
    for e in range(episodes):
        run(e % n_scripts)
    return time.perf_counter() - start


def _run_vector(env_id: str, kwargs: dict[str, Any], episodes: int, num_envs: int = 8) -> float:
    """Episodes per second of a ``SyncVectorEnv``, each sub-env playing its own task's gold actions.

    Only ``venv.step`` is timed; the gold actions of each new task are looked up between steps.
    Gymnasium's default next-step autoreset resets a finished sub-env on the following step,
    whose action it ignores. Gold actions that do not end an episode (a protocol that cannot
    write them) are followed by their last action until the registered time limit ends it.
    """
    venv = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", **kwargs)
    subs = [e.unwrapped for e in venv.envs]  # type: ignore[attr-defined]
    cache: dict[str, list[str]] = {}

    def actions_of(base: Any) -> list[str]:
        if base.task.id not in cache:
            cache[base.task.id] = _gold_actions(base, base.task)
        return list(cache[base.task.id])

    venv.reset(seed=0)
    queues = [actions_of(b) for b in subs]
    resetting = [False] * num_envs
    done, elapsed = 0, 0.0
    while done < episodes:
        actions = ["" if resetting[j] else queues[j].pop(0) for j in range(num_envs)]
        start = time.perf_counter()
        _, _, terminated, truncated, _ = venv.step(actions)
        elapsed += time.perf_counter() - start
        for j in range(num_envs):
            if resetting[j]:  # that step was the reset: a new task
                resetting[j], queues[j] = False, actions_of(subs[j])
            elif terminated[j] or truncated[j]:
                resetting[j], done = True, done + 1
            elif not queues[j]:  # actions that do not end the episode: repeat the last until TimeLimit does
                queues[j] = [actions[j]]
    venv.close()
    return done / elapsed


def bench_env(
    env_ids: Sequence[str] | None = None,
    *,
    protocols: Sequence[str] | None = None,
    episodes: int = 5_000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Measure every env id (default: every registered train id) under each protocol.

    Args:
        env_ids: Registered ids (default: every id except held-out copies, which repeat their train id).
        protocols: Protocols to measure every env with (default: :func:`protocols_for` each env).
        episodes: Scripted episodes per env and protocol (the vector env plays at most 2,000).
        seed: Seed of the first reset.

    Returns one row per (env, protocol) with ``episodes_per_s``, ``steps_per_s``,
    ``bare_env_episodes_per_s``, ``vector_episodes_per_s``, ``reference_episodes_per_s`` (the
    episodes' work without the env) and ``overhead_x`` (reference / env speed); an env whose
    data or package is missing gets one row with ``skipped`` (the reason).
    """
    if env_ids is None:
        env_ids = [i for i in toolenv.ENV_INFO if not i.endswith(("-Test-v0", "-Valid-v0"))]
    rows: list[dict[str, Any]] = []
    for env_id in env_ids:
        for protocol in protocols or protocols_for(env_id):
            try:
                env = gym.make(env_id, protocol=protocol)
            except FileNotFoundError as e:  # missing data, or bfcl-eval not installed (a DataNotFoundError)
                rows.append({"env": env_id, "protocol": protocol, "skipped": str(e).splitlines()[0]})
                break
            env.reset(seed=seed)
            scripts = _scripts(env, _SCRIPTS)
            reference = _reference(env, scripts)
            _run(env, scripts, min(200, episodes))  # warm-up: caches, first-call checks
            elapsed, steps, solved = _run(env, scripts, episodes)
            bare_elapsed, _, _ = _run(env.unwrapped, scripts, episodes)
            ref_elapsed = _run_reference(reference, len(scripts), episodes)
            vector = _run_vector(env_id, {"protocol": protocol}, min(episodes, 2_000))
            env.close()
            rows.append(
                {
                    "env": env_id,
                    "protocol": protocol,
                    "episodes": episodes,
                    "solved": solved / episodes,
                    "steps_per_episode": steps / episodes,
                    "episodes_per_s": episodes / elapsed,
                    "steps_per_s": steps / elapsed,
                    "bare_env_episodes_per_s": episodes / bare_elapsed,
                    "vector_episodes_per_s": vector,
                    "reference_episodes_per_s": episodes / ref_elapsed,
                    "overhead_x": elapsed / ref_elapsed,
                }
            )
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of :func:`bench_env` rows."""
    head = ("| env | protocol | steps/ep | episodes/s | steps/s | bare env ep/s | vector(8) ep/s | reference ep/s |"
            " env cost (x ref) | solved |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['env']} | - | skipped: {r['skipped']} | | | | | | | |")
            continue
        lines.append(
            f"| {r['env']} | {r['protocol']} | {r['steps_per_episode']:.1f} | {r['episodes_per_s']:,.0f} |"
            f" {r['steps_per_s']:,.0f} | {r['bare_env_episodes_per_s']:,.0f} | {r['vector_episodes_per_s']:,.0f} |"
            f" {r['reference_episodes_per_s']:,.0f} | {r['overhead_x']:.1f} | {r['solved']:.0%} |"
        )
    return "\n".join(lines)


def _add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: The first.
        b: The second.
    """
    return a + b


def bench_tool_limits(calls: int = 20_000) -> list[dict[str, Any]]:
    """What each tool time-limit mode costs per call, against the bare function in the same run.

    Modes: ``main thread`` (``SIGALRM`` timer set and cleared around the call, the caller's timer
    and handler restored, decimal and mpmath state restored), ``other thread`` (the call in a
    daemon thread with a bounded wait, as servers and thread pools run steps). Each row gives
    calls per second and the cost per call in microseconds over the bare call.
    """
    import threading

    from toolenv.tools import Tool

    tool = Tool(_add, timeout=1.0)
    call = ToolCall("_add", {"a": 1, "b": 2})

    def rate(fn: Any) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return calls / (time.perf_counter() - start)

    bare = rate(lambda: _add(1, 2))
    main = rate(lambda: tool(call))
    box: dict[str, float] = {}
    worker = threading.Thread(target=lambda: box.update(r=rate(lambda: tool(call))))
    worker.start()
    worker.join()
    isolated_tool = Tool(_add, timeout=1.0, isolate=True)
    few = max(1, calls // 200)  # a fork per call
    start = time.perf_counter()
    for _ in range(few):
        isolated_tool(call)
    isolated = few / (time.perf_counter() - start)
    rows = [{"mode": "bare function (reference)", "calls_per_s": bare, "overhead_us": 0.0}]
    for mode, r in (("tool call, main thread (binding, SIGALRM limit, state restored)", main),
                    ("tool call, other thread (daemon thread + bounded wait)", box["r"]),
                    ("tool call, isolated (Tool(isolate=True): a forked worker per call)", isolated)):
        rows.append({"mode": mode, "calls_per_s": r, "overhead_us": 1e6 * (1 / r - 1 / bare)})
    return rows


def format_tool_limits(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of :func:`bench_tool_limits` rows."""
    lines = ["| tool limit mode | calls/s | cost per call over the bare function |", "|---|---:|---:|"]
    lines += [f"| {r['mode']} | {r['calls_per_s']:,.0f} | {r['overhead_us']:,.1f} µs |" for r in rows]
    return "\n".join(lines)


def bench_server(env_id: str = "toolenv/Math-v0", sessions: int = 4, episodes: int = 200) -> dict[str, Any]:
    """Gold episodes per second through ``toolenv serve`` with ``sessions`` concurrent OpenEnv clients,
    against the same episodes stepped in-process by as many threads (text actions, the env's protocol).

    The server runs in its own process on 127.0.0.1; each client thread holds one WebSocket session
    and plays ``episodes / sessions`` episodes (task ``i`` of the split, gold actions). What the
    server adds — JSON over a WebSocket, a session per client, the event loop — is the difference.
    """
    import socket
    import subprocess
    import sys
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from openenv.core.generic_client import GenericEnvClient

    probe = gym.make(env_id)
    n_tasks = len(probe.unwrapped.tasks)  # type: ignore[attr-defined]
    scripts = []
    for i in range(min(n_tasks, 64)):
        probe.reset(options={"index": i})
        scripts.append((i, list(probe.unwrapped.gold_actions())))  # type: ignore[attr-defined]
    per_session = max(1, episodes // sessions)

    def in_process(k: int) -> int:
        env = gym.make(env_id)
        steps = 0
        for e in range(per_session):
            index, actions = scripts[(k * per_session + e) % len(scripts)]
            env.reset(options={"index": index})
            for a in actions:
                env.step(a)
                steps += 1
        return steps

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=sessions) as pool:
        local_steps = sum(pool.map(in_process, range(sessions)))
    local = time.perf_counter() - start

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "toolenv.cli", "serve", env_id, "--port", str(port), "--max-sessions", str(sessions)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)

        def remote(k: int) -> int:
            steps = 0
            with GenericEnvClient(base_url=url).sync() as client:
                for e in range(per_session):
                    index, actions = scripts[(k * per_session + e) % len(scripts)]
                    client.reset(index=index)
                    for a in actions:
                        client.step({"text": a})
                        steps += 1
            return steps

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=sessions) as pool:
            remote_steps = sum(pool.map(remote, range(sessions)))
        served = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)
    total = per_session * sessions
    return {"env": env_id, "sessions": sessions, "episodes": total, "in_process_episodes_per_s": total / local,
            "server_episodes_per_s": total / served, "in_process_steps_per_s": local_steps / local, "server_steps_per_s": remote_steps / served,
            "server_vs_in_process": (total / served) / (total / local)}


def format_server_table(row: dict[str, Any]) -> str:
    return "\n".join([
        "| env | sessions | in-process episodes/s | through the server episodes/s | server / in-process |",
        "|---|---:|---:|---:|---:|",
        f"| `{row['env']}` | {row['sessions']} | {row['in_process_episodes_per_s']:,.0f} | {row['server_episodes_per_s']:,.0f} | "
        f"{row['server_vs_in_process']:.3f}x |",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    """``toolenv bench env [--env ID ...] [--protocol P ...] [--episodes N] [--tool-limits]``: print the table."""

    parser = ArgumentParser(prog="toolenv bench env", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--env", action="append", default=[], metavar="ID", help="env id (repeatable; default: every train id)")
    parser.add_argument("--protocol", action="append", default=[], choices=list(PROTOCOLS),
                        help="protocol (repeatable; default: trice, react, json; react, json for APIChain; python, json for BFCL)")
    parser.add_argument("--episodes", type=int, default=5_000, help="scripted episodes per env and protocol")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tool-limits", action="store_true", help="also measure what each tool time-limit mode costs per call")
    parser.add_argument("--server-sessions", type=int, default=0, metavar="N",
                        help="instead: episodes/s through `toolenv serve` with N concurrent OpenEnv sessions, against N in-process threads")
    args = parser.parse_args(argv)
    from agents.config import usage_error

    if args.episodes < 1:
        usage_error(parser, f"expected --episodes >= 1, got {args.episodes}")
    for env_id in args.env:
        try:
            toolenv.check_env_args(env_id)
        except ValueError as e:
            usage_error(parser, str(e))
    if args.server_sessions:
        if args.server_sessions < 1:
            usage_error(parser, f"expected --server-sessions >= 1, got {args.server_sessions}")
        try:
            import openenv  # noqa: F401
        except ImportError:
            usage_error(parser, "--server-sessions needs the openenv-core package: pip install 'toolenv[openenv]'")
        for env_id in args.env or ["toolenv/Math-v0"]:
            print(format_server_table(bench_server(env_id, sessions=args.server_sessions, episodes=args.episodes)))
        return 0
    rows = bench_env(args.env or None, protocols=args.protocol or None, episodes=args.episodes, seed=args.seed)
    print(format_table(rows))  # the CLI layer's output
    if args.tool_limits:
        print()
        print(format_tool_limits(bench_tool_limits()))
    return 0
