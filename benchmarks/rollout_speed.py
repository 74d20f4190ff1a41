"""``toolenv bench rollout``: the rollout loop's speed against plain ``model.generate``, in the same run.

Two figures matter for a tool-use rollout loop:

- **tokens/s relative to ``model.generate``** on the same prompts, batch and model: the first
  turn of a rollout is exactly one batched ``generate`` on the env prompts, so the ratio measures
  the loop's own cost (log-prob recording, cutting, env stepping, re-tokenising observations).
  Goal: at least 0.9×.
- **share of wall time inside ``env.step``** over whole multi-turn episodes. Goal: under 1 %.

Both runs sample at temperature 1 with the same ``max_new_tokens`` and seed.

``--turns 1,3,8`` adds the cost of long episodes: tokens/s over episodes of exactly that many turns
(every answer is followed by a user turn asking to check it, so no episode ends early), generated
greedily with the KV cache continued across turns against re-prefilling each turn, on the same
prompts, with how many episodes came out token-identical and the largest log-prob difference.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import torch

import toolenv
from agents.policy import Policy
from agents.rollout import ChatFormat, GenerationSettings, HFGenerator, rollout
from toolenv.cli import ArgumentParser

__all__ = ["bench_rollout", "bench_turns", "format_rollout_table", "format_turns_table", "main"]


class _TimedStep(gym.Wrapper):
    """Accumulates the wall time spent inside ``step``."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.seconds = 0.0

    def step(self, action: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.env.step(action)
        finally:
            self.seconds += time.perf_counter() - start


def _generate_tokens_per_s(policy: Policy, prompts: list[list[int]], max_new_tokens: int, seed: int) -> tuple[float, int]:
    tok = policy.tokenizer
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    torch.manual_seed(seed)
    start = time.perf_counter()
    with torch.no_grad():
        out = policy.model.generate(
            input_ids=ids.to(policy.device), attention_mask=mask.to(policy.device), max_new_tokens=max_new_tokens,
            do_sample=True, temperature=1.0, top_p=1.0, top_k=0, eos_token_id=policy.eos_token_ids, pad_token_id=tok.pad_token_id,
        )
    elapsed = time.perf_counter() - start
    new = out[:, width:]
    eos = set(policy.eos_token_ids)
    count = 0
    for row in new.tolist():
        k = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        count += k
    return count / elapsed, count


def bench_rollout(
    policy: Policy,
    *,
    env_id: str = "toolenv/Math-v0",
    batch_size: int = 16,
    max_new_tokens: int = 48,
    repeats: int = 2,
    seed: int = 0,
    generator: Any = None,
) -> dict[str, float]:
    """Measure one policy; returns tokens/s of both, their ratio, and the env-step share.

    ``generator`` is the rollout's backend (default: Hugging Face ``generate``; a
    :class:`~agents.rollout.VLLMGenerator` or :class:`~agents.rollout.OpenAIServerGenerator` for
    ``--backend vllm`` / ``server``); the reference is always plain ``model.generate``.
    """
    fmt = ChatFormat(policy.tokenizer)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=1.0)
    envs = [gym.make(env_id) for _ in range(batch_size)]
    options = [{"index": i} for i in range(batch_size)]
    prompts = []
    for env, opt in zip(envs, options):
        env.reset(options=opt)
        prompts.append(fmt.prompt_ids(env.unwrapped.messages))  # type: ignore[attr-defined]
    _generate_tokens_per_s(policy, prompts[:2], 4, seed)  # warm-up
    ref_rates, turn1_rates, full_rates, shares = [], [], [], []
    for r in range(repeats):
        rate, _ = _generate_tokens_per_s(policy, prompts, max_new_tokens, seed + r)
        ref_rates.append(rate)
        torch.manual_seed(seed + r)
        start = time.perf_counter()
        trajs = rollout(policy, envs, settings=settings, options=options, max_turns=1, generator=generator)
        elapsed = time.perf_counter() - start
        turn1_rates.append(sum(t.num_model_tokens for t in trajs) / elapsed)
        timed = [_TimedStep(gym.make(env_id)) for _ in range(batch_size)]
        torch.manual_seed(seed + r)
        start = time.perf_counter()
        trajs = rollout(policy, timed, settings=settings, options=options, env_ids=[env_id] * batch_size, generator=generator)
        elapsed = time.perf_counter() - start
        full_rates.append(sum(t.num_model_tokens for t in trajs) / elapsed)
        shares.append(sum(e.seconds for e in timed) / elapsed)
    ref, turn1 = max(ref_rates), max(turn1_rates)
    return {
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "generate_tokens_per_s": ref,
        "rollout_turn1_tokens_per_s": turn1,
        "ratio": turn1 / ref,
        "rollout_episode_tokens_per_s": max(full_rates),
        "env_step_share": min(shares),
    }


def _continuing(env_id: str, index: int) -> gym.Env:
    """``env_id`` on task ``index`` where every answer is followed by a user turn asking to check it (episodes never end)."""
    env = gym.make(env_id)
    base: Any = env.unwrapped

    def follow_up(answer: str) -> tuple[dict[str, float], bool, str]:
        obs = "Check that once more, then give your answer again."
        base.messages.append({"role": "user", "content": obs})
        return {}, False, obs

    base._on_answer = follow_up
    env.reset(options={"index": index})
    return env


def bench_turns(policy: Policy, *, env_id: str = "toolenv/APIChain-L1-v1", turns: Sequence[int] = (1, 3, 8), batch_size: int = 8,
                max_new_tokens: int = 32, repeats: int = 1) -> list[dict[str, float]]:
    """Tokens/s over ``t``-turn episodes, the KV cache continued across turns against re-prefilling, for each ``t`` in ``turns``."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens, greedy=True)
    options = [{"index": i} for i in range(batch_size)]
    rows = []
    for t in turns:
        rates: dict[bool, list[float]] = {False: [], True: []}
        trajs: dict[bool, Any] = {}
        for _ in range(repeats):
            for reuse in (False, True):  # interleaved, so drifts in machine speed hit both alike
                envs = [_continuing(env_id, i) for i in range(batch_size)]
                gen = HFGenerator(policy, reuse_cache=reuse)
                start = time.perf_counter()
                trajs[reuse] = rollout(policy, envs, settings=settings, options=options, max_turns=t, generator=gen)
                rates[reuse].append(sum(tr.num_model_tokens for tr in trajs[reuse]) / (time.perf_counter() - start))
        same = sum(a.token_ids == b.token_ids for a, b in zip(trajs[False], trajs[True]))
        gaps = [abs(x - y) for a, b in zip(trajs[False], trajs[True]) if a.token_ids == b.token_ids for x, y in zip(a.logprobs, b.logprobs)]
        rows.append({"turns": t, "batch_size": batch_size, "context_tokens": max(len(tr.token_ids) for tr in trajs[True]),
                     "reprefill_tokens_per_s": max(rates[False]), "reuse_tokens_per_s": max(rates[True]),
                     "ratio": max(rates[True]) / max(rates[False]), "identical_episodes": same, "max_logprob_gap": max(gaps, default=0.0)})
    return rows


def format_turns_table(rows: list[dict[str, float]], model: str) -> str:
    lines = ["| model | turns | batch | longest episode (tokens) | re-prefill tok/s | KV reuse tok/s | ratio | identical episodes | max log-prob gap |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {model} | {r['turns']} | {r['batch_size']} | {r['context_tokens']} | {r['reprefill_tokens_per_s']:.1f} |"
                     f" {r['reuse_tokens_per_s']:.1f} | {r['ratio']:.2f}x | {r['identical_episodes']}/{r['batch_size']} |"
                     f" {r['max_logprob_gap']:.1e} |")
    return "\n".join(lines)


def format_rollout_table(row: dict[str, float], model: str) -> str:
    return "\n".join(
        [
            "| model | batch | generate tok/s | rollout tok/s (turn 1) | ratio | rollout tok/s (episodes) | time in env.step |",
            "|---|---|---|---|---|---|---|",
            f"| {model} | {row['batch_size']} | {row['generate_tokens_per_s']:.1f} | {row['rollout_turn1_tokens_per_s']:.1f} |"
            f" {row['ratio']:.2f}x | {row['rollout_episode_tokens_per_s']:.1f} | {row['env_step_share']:.3%} |",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``toolenv bench rollout [--model NAME] [--batch-size B] [--max-new-tokens T]``: print the table."""

    parser = ArgumentParser(prog="toolenv bench rollout", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="model name or path")
    parser.add_argument("--env", default="toolenv/Math-v0", help="env id")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", choices=["hf", "vllm", "server"], default="hf",
                        help="rollout generation: hf (model.generate), vllm (in-process engine, needs a GPU), server (an OpenAI-compatible vLLM server)")
    parser.add_argument("--server-url", default=None, help="--backend server: the server's base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--server-model", default=None, help="--backend server: the served model name (default: --model)")
    parser.add_argument("--turns", default=None, help="also time episodes of these many turns, KV cache reused against re-prefilling, e.g. 1,3,8 (hf backend)")
    parser.add_argument("--turns-env", default="toolenv/APIChain-L1-v1", help="--turns: the env id")
    args = parser.parse_args(argv)
    from agents.config import usage_error
    from agents.policy import check_model_name, resolve_device

    try:  # before the model loads
        for name in ("batch_size", "max_new_tokens", "repeats"):
            if getattr(args, name) < 1:
                raise ValueError(f"expected --{name.replace('_', '-')} >= 1, got {getattr(args, name)}")
        toolenv.check_env_args(args.env)
        resolve_device(args.device)
        check_model_name(args.model)
        if args.backend == "vllm" and not torch.cuda.is_available():
            raise ValueError("--backend vllm needs a CUDA GPU and the vllm package; on a CPU use --backend hf")
        if args.backend == "server" and not args.server_url:
            raise ValueError("--backend server needs --server-url (a vLLM or SGLang OpenAI-compatible server)")
        turns = _parse_turns(args.turns) if args.turns else None
        if turns and args.backend != "hf":
            raise ValueError("--turns measures Hugging Face generation's KV reuse: use it with --backend hf (vLLM and servers cache prefixes themselves)")
        if turns:
            toolenv.check_env_args(args.turns_env)
    except (ValueError, FileNotFoundError) as e:
        usage_error(parser, str(e))
    policy = Policy.load(args.model, device=args.device, trainable=False)
    generator = None
    if args.backend == "vllm":
        from agents.rollout import VLLMGenerator

        generator = VLLMGenerator(policy)
    elif args.backend == "server":
        from agents.rollout import OpenAIServerGenerator

        generator = OpenAIServerGenerator(args.server_url, args.server_model or args.model, policy)
    row = bench_rollout(policy, env_id=args.env, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, repeats=args.repeats,
                        generator=generator)
    print(format_rollout_table(row, f"{args.model} ({args.backend})"))
    if turns:
        print()
        print(format_turns_table(bench_turns(policy, env_id=args.turns_env, turns=turns, max_new_tokens=args.max_new_tokens), args.model))
    return 0


def _parse_turns(text: str) -> list[int]:
    """``--turns``: comma-separated positive integers."""
    try:
        turns = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        turns = []
    if not turns or min(turns) < 1:
        raise ValueError(f"expected --turns as comma-separated positive integers such as 1,3,8, got {text!r}")
    return turns
