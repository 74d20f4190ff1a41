"""The ``toolenv`` command line: a thin layer that parses arguments and calls into the packages.

Imports are lazy, so ``toolenv list`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from collections.abc import Sequence
from typing import Any

__all__ = ["ArgumentParser", "main"]


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but a usage mistake is one line: ``PROG: error: MESSAGE (PROG --help)``, status 2.

    Every ``toolenv`` command and sub-command parses with it (subparsers inherit the class).
    """

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def _parse_kwargs(pairs: Sequence[str]) -> dict[str, Any]:
    """``--kw KEY=VALUE`` pairs as env kwargs (:func:`toolenv.parse_kw`)."""
    from toolenv.registration import parse_kw

    return parse_kw(pairs)


#: Mistakes a user can make (a bad id, kwarg, value, path); the command line reports them in one line.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, KeyError)


def _cmd_list(args: argparse.Namespace) -> int:
    import toolenv

    rows = [
        (info.id, info.description, ", ".join(info.tools), ", ".join(info.datasets) + (" (data dir)" if info.needs_data else ""))
        for info in toolenv.ENV_INFO.values()
    ]
    if args.json:
        print(json.dumps([vars(i) | {"tools": list(i.tools), "datasets": list(i.datasets)} for i in toolenv.ENV_INFO.values()], indent=2))
        return 0
    width = max(len(r[0]) for r in rows)
    for env_id, desc, tools, datasets in rows:
        print(f"{env_id:<{width}}  {desc}\n{'':<{width}}  tools: {tools}; datasets: {datasets}")
    return 0


def _make(env_id: str, kwargs: dict[str, Any]) -> Any:
    import gymnasium as gym

    import toolenv

    toolenv.check_env_args(env_id, kwargs)
    try:
        return gym.make(env_id, **kwargs)
    except USER_ERRORS as e:  # missing data, bad kwargs: say so, no traceback
        raise ValueError(f"cannot make {env_id}: {e}") from None


def _cmd_play(args: argparse.Namespace) -> int:
    kwargs = _parse_kwargs(args.kw)
    if args.protocol:
        kwargs["protocol"] = args.protocol
    env = _make(args.env_id, kwargs)
    options = {"index": args.index} if args.index is not None else None
    obs, info = env.reset(seed=args.seed, options=options)  # an --index out of range is a one-line error
    task = info["task"]
    print(f"== {args.env_id}  task {task['id']}  (protocol: {env.unwrapped.protocol.name})")
    print(obs)
    if args.show_answer:
        print(f"\n[gold answer: {task['answer']}; gold actions: {env.unwrapped.gold_actions()}]")
    print("\nType an action and press Enter (write \\n for a newline). Ctrl-D quits.")
    total = 0.0
    while True:
        try:
            line = input("> ")
        except EOFError:
            print("\n(quit)")
            return 0
        action = line.replace("\\n", "\n")
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        terms = ", ".join(f"{k} {v:+.2f}" for k, v in info["reward_terms"].items() if v)
        if obs:
            print(obs)
        print(f"  reward {reward:+.2f}  ({terms or 'no terms'})")
        if terminated or truncated:
            end = "solved" if info["success"] else ("truncated" if truncated else "wrong answer")
            print(
                f"== episode over: {end}; return {total:+.2f}; tool calls {info['num_tool_calls']};"
                f" gold answer {task['answer']}"
            )
            return 0


BENCHMARKS = {
    "env": ("benchmarks.env_speed", "env speed: episodes and steps per second under scripted actions"),
    "rollout": ("benchmarks.rollout_speed", "rollout loop tokens/s against model.generate; time inside env.step"),
    "trice": ("benchmarks.trice", "the TRICE pipeline: zero-shot -> BC -> RRHF, evaluated on held-out test splits"),
    "steptool": ("benchmarks.steptool", "PPO vs step-PPO vs DPO vs GRPO vs RFT vs ArCHer from one BC warm start, same samples; CoT and DFSDT"),
    "train-speed": ("benchmarks.train_speed", "toolenv's bc and dpo steps against TRL's SFTTrainer and DPOTrainer, interleaved, with peak memory"),
    "ste": ("benchmarks.ste", "STE: explore -> filter -> paraphrase, then base vs ICL vs fine-tuned (continual, with and without replay)"),
}


def _cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(BENCHMARKS[args.what][0])
    return int(module.main(args.rest) or 0)


def _cmd_train(args: argparse.Namespace) -> int:
    from agents.config import config_from_args
    from agents.registry import agent_defaults, available_agents, load_agent

    if args.agent in (None, "-h", "--help", "list"):
        names = ", ".join(sorted(available_agents()))
        usage = f"usage: toolenv train AGENT [options]   (toolenv train AGENT --help lists its options)\nagents: {names}"
        if args.agent is None:  # a missing argument is a usage error
            print(usage, file=sys.stderr)
            return 2
        print(usage)
        return 0
    agent = load_agent(args.agent)
    cfg = config_from_args(agent.Config, args.rest, defaults=agent_defaults(args.agent), prog=f"toolenv train {args.agent}")
    out = agent.train(cfg)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # under accelerate launch: leave the group before the process exits,
        dist.barrier()  # so no rank tears down gloo's threads while another is still in a collective
        dist.destroy_process_group()
    from toolenv.registration import held_out_env_of

    held_out = [held_out_env_of(e) for e in cfg.env]
    if held_out == list(cfg.env):
        note = " (no held-out variant of this env is registered: pass one with --env to evaluate on unseen tasks)"
    else:
        note = ""
    envs = " ".join(f"--env {e}" for e in dict.fromkeys(held_out))
    print(f"saved to {out}; evaluate with: toolenv eval --model {out} {envs} --out {out}/eval{note}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import toolenv
    from agents.config import check_out_dir, check_positive
    from agents.evaluate import evaluate_model, format_metrics_table
    from agents.policy import check_model_name, resolve_device

    # every mistake that can be seen before the model loads, is
    kwargs = _parse_kwargs(args.kw)
    for env_id in args.env:
        toolenv.check_env_args(env_id, kwargs)
    for name in ("episodes", "batch_size", "max_new_tokens", "width", "max_queries", "temperature"):
        check_positive(f"--{name.replace('_', '-')}", getattr(args, name))
    resolve_device(args.device)
    check_model_name(args.model)
    check_out_dir(args.out, "--out")
    metrics = evaluate_model(
        args.model, args.env, episodes=args.episodes, out_dir=args.out, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, device=args.device, dtype=args.dtype,
        env_kwargs=kwargs, progress=not args.no_progress, strategy=args.strategy, width=args.width,
        max_queries=args.max_queries, temperature=args.temperature, seed=args.seed,
    )
    print(format_metrics_table(metrics))
    print(f"\nwrote metrics.md, metrics.json, metrics.png, trajectories.jsonl and runs/ to {args.out}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import toolenv

    kwargs = _parse_kwargs(args.kw)
    toolenv.check_env_args(args.env_id, kwargs)
    if args.max_sessions < 1:
        raise ValueError(f"Expected --max-sessions >= 1, got {args.max_sessions}.")
    if not 0 < args.port < 65536:
        raise ValueError(f"Expected --port between 1 and 65535, got {args.port}.")
    from toolenv.integrations.openenv import _require, serve

    _require()
    gym_env = __import__("gymnasium").make(args.env_id, **kwargs)  # data and kwargs checked before the server starts
    gym_env.close()
    print(f"serving {args.env_id} on http://{args.host}:{args.port} (OpenEnv: WebSocket /ws, MCP /mcp; at most {args.max_sessions} sessions)",
          flush=True)
    serve(args.env_id, host=args.host, port=args.port, max_sessions=args.max_sessions, env_kwargs=kwargs)
    return 0


def _cmd_ste(args: argparse.Namespace) -> int:
    from agents.ste.cli import main as ste_main

    return ste_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="toolenv", description="Tool-use tasks for language models as Gymnasium environments.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="every registered env id with its description, tools and datasets")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=_cmd_list)

    p = sub.add_parser("play", help="play an episode in the terminal")
    p.add_argument("env_id", help="a registered id, e.g. toolenv/Math-v0")
    p.add_argument("--seed", type=int, default=None, help="seed of the task sampler")
    p.add_argument("--index", type=int, default=None, help="play the task at this index of the split")
    from toolenv.protocols import PROTOCOLS

    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default=None, help="action protocol")
    p.add_argument("--kw", action="append", default=[], metavar="KEY=VALUE", help="env kwarg (repeatable)")
    p.add_argument("--show-answer", action="store_true", help="show the gold answer and actions first")
    p.set_defaults(fn=_cmd_play)

    p = sub.add_parser("bench", help="benchmarks: " + "; ".join(f"{k}: {v[1]}" for k, v in BENCHMARKS.items()),
                       add_help=False)
    p.add_argument("what", choices=sorted(BENCHMARKS), help="which benchmark (then its own options; --help lists them)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(fn=_cmd_bench)

    p = sub.add_parser("train", help="train an agent: toolenv train NAME [options] (toolenv train NAME --help)", add_help=False)
    p.add_argument("agent", nargs="?", help="agent name: bc, rrhf, ppo, step-ppo, grpo, dpo, rft, archer, a module path, or one registered under the toolenv.agents entry points")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(fn=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a model on the first N tasks of each env (greedy CoT, or DFSDT search)")
    p.add_argument("--model", required=True, metavar="NAME_OR_PATH",
                   help="a local directory, a hub id, a directory saved by an agent, or smollm2-135m")
    p.add_argument("--env", action="append", required=True, metavar="ID", help="env id (repeatable)")
    p.add_argument("--episodes", type=int, default=100, help="tasks per env: the first N of its split")
    p.add_argument("--out", required=True, metavar="DIR", help="where metrics, plot, trajectories and TensorBoard logs go")
    p.add_argument("--batch-size", type=int, default=16, help="episodes played at once")
    p.add_argument("--max-new-tokens", type=int, default=96, help="tokens per action at most")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "fp32", "bfloat16", "bf16"],
                   help="model dtype (auto: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--kw", action="append", default=[], metavar="KEY=VALUE", help="env kwarg (repeatable)")
    p.add_argument("--strategy", choices=["cot", "dfsdt"], default="cot",
                   help="cot: one greedy episode per task; dfsdt: ToolBench's depth-first search decision tree (sampled, backtracking)")
    p.add_argument("--width", type=int, default=2, help="dfsdt: children per node at most")
    p.add_argument("--max-queries", type=int, default=20, help="dfsdt: sampled actions per task at most")
    p.add_argument("--temperature", type=float, default=1.0, help="dfsdt: sampling temperature")
    p.add_argument("--seed", type=int, default=0, help="dfsdt: sampling seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(fn=_cmd_eval)

    p = sub.add_parser("serve", help="serve an env over OpenEnv (WebSocket sessions, MCP tools) for remote trainers")
    p.add_argument("env_id", help="a registered id, e.g. toolenv/Math-v0")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-sessions", type=int, default=8, help="concurrent sessions, each its own env (default 8)")
    p.add_argument("--kw", action="append", default=[], metavar="KEY=VALUE", help="env kwarg (repeatable)")
    p.set_defaults(fn=_cmd_serve)

    p = sub.add_parser("ste", help="STE (simulated trial and error): explore, filter, paraphrase, build (toolenv ste --help)",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(fn=_cmd_ste)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``toolenv`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["train"], ["bench"]) and argv[1:2] in (["-h"], ["--help"]):
        argv = ["train", "list"] if argv[0] == "train" else ["bench", "--what-help"]
    if argv[:1] == ["ste"] and argv[1:2] in (["-h"], ["--help"]):
        argv = ["ste"]
    if argv == ["bench", "--what-help"] or argv == ["bench"]:
        print("usage: toolenv bench WHAT [options]   (toolenv bench WHAT --help lists its options)")
        for name, (_, text) in BENCHMARKS.items():
            print(f"  {name:<9} {text}")
        return 0
    args = build_parser().parse_args(argv)
    import os

    try:
        return int(args.fn(args) or 0)
    except USER_ERRORS as e:
        if os.environ.get("TOOLENV_DEBUG") == "1":
            raise
        message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {message}  (TOOLENV_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
