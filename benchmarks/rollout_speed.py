"""``toolenv bench rollout``: the rollout loop's speed against plain ``model.generate``, in the same run.

Two figures matter for a tool-use rollout loop:

- **tokens/s relative to ``model.generate``** on the same prompts, batch and model: the first
  turn of a rollout is exactly one batched ``generate`` on the env prompts, so the ratio measures
  the loop's own cost (log-prob recording, cutting, env stepping, re-tokenising observations).
  Goal: at least 0.9×.
- **share of wall time inside ``env.step``** over whole multi-turn episodes. Goal: under 1 %.

Both runs sample at temperature 1 with the same ``max_new_tokens`` and seed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import torch

import toolenv
from agents.policy import Policy
from agents.rollout import ChatFormat, GenerationSettings, rollout
from toolenv.cli import ArgumentParser

__all__ = ["bench_rollout", "format_rollout_table", "main"]


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
    return 0
