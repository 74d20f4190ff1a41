"""``toolenv bench train-speed``: toolenv's training steps against TRL's trainers, interleaved in one run.

Each measurement runs in its own process (so its peak memory is its own, ``ru_maxrss``), and the
processes alternate between the two sides of a pair (toolenv, TRL, toolenv, TRL, ...) so drift in
the machine's load hits both. Every pair uses the same model, LoRA settings (rank, alpha, all
linear layers), batch, learning rate and data:

- **sft**: toolenv's behaviour-cloning step (the body of :func:`agents.bc.sft_step` — ``TokenScorer``,
  the LM head only at labelled positions, in chunks, and :func:`agents.bc.bc_loss` — on batches taken
  in order rather than drawn at random, so both sides see the same batches) against TRL's ``SFTTrainer`` on the same token sequences — the
  gold episodes of ``toolenv/Math-v0`` (prompt, call, tool output, answer), the model's tokens as
  TRL's ``completion_mask`` (``completion_only_loss``).
- **dpo**: toolenv's DPO step (the agent's own ``_pair_logps``: reference log-probs first, the adapter
  disabled, then the policy's, and :func:`agents.dpo.dpo_loss`) against TRL's ``DPOTrainer`` on the same single-turn pairs
  (the gold call against a wrong call for each task's prompt), sigmoid loss, beta 0.1.
- **grpo**: one iteration of :func:`agents.grpo.train` (sampling ``batch`` completions, 4 per task
  prompt of ``toolenv/Math-v0``, at temperature 1 with at most 32 new tokens; the env's rewards; the
  reference log-probs for a k3 KL of 0.04; one clipped-surrogate update) against one step of TRL's
  ``GRPOTrainer`` with the same prompts, ``num_generations`` 4, ``max_completion_length`` 32,
  temperature 1, top-p 1, no top-k, ``beta`` 0.04, one iteration per batch. TRL generates one
  completion per prompt, so toolenv's episodes are cut after their first action (the rollout's
  ``max_turns=1``); a step is timed from one iteration's sampling to the next's.

TRL's ``gradient_checkpointing`` is turned off (its configs default to on) so both sides
do the same work. Reported: steps/s and tokens/s (prompt and completion tokens of the batch) after
``warmup`` steps (best of ``repeats``), the ratio toolenv / TRL, and peak RSS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolenv.cli import ArgumentParser

__all__ = ["format_train_speed_table", "main", "run_train_speed"]

PAIRS = ("sft", "dpo", "grpo")
GRPO_GROUP, GRPO_NEW_TOKENS, GRPO_KL = 4, 32, 0.04


def _data(tokenizer: Any, n: int) -> tuple[list[Any], list[tuple[list[int], list[int], list[int]]]]:
    """Gold episodes (for SFT) and single-turn (prompt, chosen, rejected) token triples (for DPO) of Math-v0."""
    import gymnasium as gym

    import toolenv  # noqa: F401
    from agents.rollout import ChatFormat, scripted_trajectory

    env = gym.make("toolenv/Math-v0")
    fmt = ChatFormat(tokenizer)
    demos, triples = [], []
    for i in range(n):
        demos.append(scripted_trajectory(env, None, tokenizer, options={"index": i}))
        env.reset(options={"index": i})
        gold = env.unwrapped.gold_actions()[0]
        prompt = fmt.prompt_ids(list(env.unwrapped.messages))
        triples.append((prompt, fmt.action_ids(gold), fmt.action_ids("calculator(1+1)")))
    return demos, triples


def _grpo_prompts(n: int) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """The chat prompts (system and user messages) and answers of Math-v0's first ``n`` tasks."""
    import gymnasium as gym

    import toolenv  # noqa: F401

    env = gym.make("toolenv/Math-v0")
    prompts, answers = [], []
    for i in range(n):
        env.reset(options={"index": i})
        prompts.append([dict(m) for m in env.unwrapped.messages])
        answers.append(str(env.unwrapped.task.answer))
    return prompts, answers


def _trl_settings(batch: int, steps: int, warmup: int, lr: float) -> dict[str, Any]:
    """The ``TrainingArguments`` every TRL side shares: batch, steps, constant learning rate, CPU, no checkpointing or saving."""
    return {"output_dir": tempfile.mkdtemp(), "max_steps": steps + warmup, "per_device_train_batch_size": batch, "learning_rate": lr,
            "report_to": [], "use_cpu": True, "logging_steps": 10_000, "save_strategy": "no", "gradient_checkpointing": False,
            "dataloader_num_workers": 0, "lr_scheduler_type": "constant", "warmup_steps": 0}


def _trl_lora(lora_r: int) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules="all-linear", task_type="CAUSAL_LM")


def _clock(times: list[float]) -> Any:
    """A TRL callback appending each optimiser step's seconds to ``times``."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            times.append(time.perf_counter() - self.start)

    return Clock()


def _grpo_worker(side: str, model: str, batch: int, steps: int, warmup: int, lora_r: int, lr: float) -> tuple[list[float], list[int]]:
    """Step seconds and tokens of ``steps + warmup`` GRPO steps on one side."""
    import agents.grpo as grpo
    from agents.policy import resolve_model

    tasks = batch * (steps + warmup)
    if batch % GRPO_GROUP:
        raise ValueError(f"expected --batch-size to be a multiple of the GRPO group size {GRPO_GROUP}, got {batch}")
    times: list[float] = []
    tokens: list[int] = []
    if side == "toolenv":
        marks: list[float] = []
        sample = grpo.rollout

        def timed_rollout(*args: Any, **kwargs: Any) -> Any:
            marks.append(time.perf_counter())
            trajs = sample(*args, **kwargs, max_turns=1)
            tokens.append(sum(len(t.token_ids) for t in trajs))
            return trajs

        grpo.rollout = timed_rollout  # type: ignore[assignment]
        with tempfile.TemporaryDirectory() as out:
            grpo.train(grpo.Config(model=model, env=["toolenv/Math-v0"], out=out, max_steps=steps + warmup + 1, group_size=GRPO_GROUP,
                                   tasks_per_step=batch // GRPO_GROUP, tasks_per_env=tasks, max_new_tokens=GRPO_NEW_TOKENS, temperature=1.0,
                                   minibatch_size=batch, epochs=1, kl_coef=GRPO_KL, lr=lr, lora_r=lora_r, lora_alpha=2 * lora_r,
                                   progress=False, save_every=10**9, seed=0, device="cpu"))
        times = [b - a for a, b in zip(marks, marks[1:])]  # the last iteration, ended by saving, is not measured
        return times, tokens[: len(times)]
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rewards.math import numeric_match

    tok = AutoTokenizer.from_pretrained(resolve_model(model))
    prompts, answers = _grpo_prompts(tasks)
    lengths = [len(tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)) for p in prompts]
    ds = Dataset.from_dict({"prompt": prompts, "answer": answers, "prompt_tokens": lengths})

    def reward(completions: list[Any], answer: list[str], completion_ids: list[list[int]], prompt_tokens: list[int], **kw: Any) -> list[float]:
        tokens.append(sum(prompt_tokens) + sum(len(c) for c in completion_ids))
        return numeric_match([c[-1]["content"] if isinstance(c, list) else c for c in completions], answer=answer)

    args = GRPOConfig(**_trl_settings(batch, steps, warmup, lr), num_generations=GRPO_GROUP, max_completion_length=GRPO_NEW_TOKENS,
                      temperature=1.0, top_p=1.0, top_k=0, beta=GRPO_KL, num_iterations=1, seed=0)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(resolve_model(model)), reward_funcs=[reward], args=args, train_dataset=ds,
                          processing_class=tok, callbacks=[_clock(times)], peft_config=_trl_lora(lora_r))
    trainer.train()
    return times, tokens


def _worker(method: str, model: str, batch: int, steps: int, warmup: int, lora_r: int, lr: float) -> dict[str, Any]:
    import torch

    from agents.policy import LoraSettings, Policy, resolve_model

    torch.manual_seed(0)
    side, kind = method.split(":")
    if kind == "grpo":
        times, tokens = _grpo_worker(side, model, batch, steps, warmup, lora_r, lr)
        return _measured(method, times, tokens, warmup)
    policy = Policy.load(model, lora=LoraSettings(r=lora_r, alpha=2 * lora_r), device="cpu")
    n = batch * (steps + warmup)
    demos, triples = _data(policy.tokenizer, n)
    times: list[float] = []
    tokens: list[int] = []
    if side == "toolenv":
        from accelerate import Accelerator

        from agents.utils import TokenScorer, collate

        accelerator = Accelerator(cpu=True)
        scorer = TokenScorer(policy.model)
        optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        scorer, optimizer = accelerator.prepare(scorer, optimizer)
        pad = policy.tokenizer.pad_token_id
        scorer.train()
        for step in range(steps + warmup):
            start = time.perf_counter()
            chunk = list(range(step * batch, (step + 1) * batch))
            if kind == "sft":
                from agents.bc import bc_loss

                b = collate([demos[i] for i in chunk], pad, accelerator.device)
                loss, _ = bc_loss(scorer(**b), b["loss_mask"])
                count = int(b["attention_mask"].sum())
            else:
                from agents.dpo import PreferencePair, _pair_logps, dpo_loss
                from agents.rollout import Trajectory

                def seq(p: list[int], c: list[int]) -> Trajectory:
                    return Trajectory("", {}, token_ids=p + c, action_mask=[0] * len(p) + [1] * len(c))

                pairs = [PreferencePair(seq(triples[i][0], triples[i][1]), seq(triples[i][0], triples[i][2]), "success") for i in chunk]
                loss, _ = dpo_loss(*_pair_logps(scorer, accelerator.unwrap_model(scorer), policy, pairs, pad, accelerator.device), beta=0.1)
                count = sum(len(p.chosen.token_ids) + len(p.rejected.token_ids) for p in pairs)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
            tokens.append(count)
    else:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(resolve_model(model))
        peft_config = _trl_lora(lora_r)
        common = _trl_settings(batch, steps, warmup, lr)
        if kind == "sft":
            from trl import SFTConfig, SFTTrainer

            ds = Dataset.from_dict({"input_ids": [d.token_ids for d in demos], "completion_mask": [d.action_mask for d in demos]})
            tokens = [sum(len(demos[i].token_ids) for i in range(s * batch, (s + 1) * batch)) for s in range(steps + warmup)]
            trainer: Any = SFTTrainer(model=base, args=SFTConfig(**common, completion_only_loss=True, max_length=4096, shuffle_dataset=False), train_dataset=ds,
                                      processing_class=policy.tokenizer, peft_config=peft_config, callbacks=[_clock(times)])
        else:
            from trl import DPOConfig, DPOTrainer

            tok = policy.tokenizer
            ds = Dataset.from_dict({"prompt": [tok.decode(p) for p, _, _ in triples], "chosen": [tok.decode(c) for _, c, _ in triples],
                                    "rejected": [tok.decode(r) for _, _, r in triples]})
            tokens = [sum(len(triples[i][0]) * 2 + len(triples[i][1]) + len(triples[i][2]) for i in range(s * batch, (s + 1) * batch))
                      for s in range(steps + warmup)]
            trainer = DPOTrainer(model=base, args=DPOConfig(**common, beta=0.1, loss_type=["sigmoid"], max_length=4096), train_dataset=ds,
                                 processing_class=tok, peft_config=peft_config, callbacks=[_clock(times)])
        trainer.train()
    return _measured(method, times, tokens, warmup)


def _measured(method: str, times: list[float], tokens: list[int], warmup: int) -> dict[str, Any]:
    import resource

    measured = times[warmup:]
    return {"method": method, "steps_per_s": len(measured) / sum(measured), "tokens_per_s": sum(tokens[warmup : len(times)]) / sum(measured),
            "step_seconds": measured, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_train_speed(model: str, pairs: Sequence[str], *, batch: int = 8, steps: int = 4, warmup: int = 1, repeats: int = 2, lora_r: int = 8,
                    lr: float = 1e-4, out: str | Path | None = None, threads: int | None = None) -> dict[str, Any]:
    """Interleaved measurements (one process each); returns ``{"runs": [...], "pairs": {pair: {...}}}``."""
    results: dict[str, Any] = {"settings": {"model": model, "batch": batch, "steps": steps, "warmup": warmup, "repeats": repeats, "lora_r": lora_r,
                                            "lr": lr, "threads": threads}, "runs": [], "pairs": {}}
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    for _ in range(repeats):
        for pair in pairs:
            for side in ("toolenv", "trl"):
                with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
                    path = f.name
                cmd = [sys.executable, "-m", "benchmarks.train_speed", "--worker", f"{side}:{pair}", "--model", model, "--batch-size", str(batch),
                       "--steps", str(steps), "--warmup", str(warmup), "--lora-r", str(lora_r), "--lr", str(lr), "--json", path]
                done = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if done.returncode != 0:
                    raise RuntimeError(f"{side}:{pair} failed:\n{done.stderr[-3000:]}")
                run = json.loads(Path(path).read_text())
                Path(path).unlink()
                results["runs"].append(run)
                print(f"{side}:{pair}: {run['steps_per_s']:.3f} steps/s, {run['tokens_per_s']:.0f} tokens/s, peak {run['peak_rss_mb']:.0f} MB",
                      flush=True)
    for pair in pairs:
        best = {side: max((r for r in results["runs"] if r["method"] == f"{side}:{pair}"), key=lambda r: r["steps_per_s"])
                for side in ("toolenv", "trl")}
        results["pairs"][pair] = {"toolenv": best["toolenv"], "trl": best["trl"],
                                  "ratio": best["toolenv"]["steps_per_s"] / best["trl"]["steps_per_s"]}
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "train_speed.json").write_text(json.dumps(results, indent=2))
        (Path(out) / "train_speed.md").write_text(format_train_speed_table(results) + "\n")
    return results


def format_train_speed_table(results: dict[str, Any]) -> str:
    names = {"sft": ("bc step", "SFTTrainer"), "dpo": ("dpo step", "DPOTrainer"), "grpo": ("grpo iteration", "GRPOTrainer")}
    lines = ["| pair | toolenv steps/s | TRL steps/s | ratio | toolenv tokens/s | TRL tokens/s | toolenv peak MB | TRL peak MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for pair, row in results["pairs"].items():
        a, b = row["toolenv"], row["trl"]
        ours, theirs = names.get(pair, (pair, pair))
        lines.append(f"| {ours} vs {theirs} | {a['steps_per_s']:.3f} | {b['steps_per_s']:.3f} | {row['ratio']:.2f}x | {a['tokens_per_s']:.0f} | "
                     f"{b['tokens_per_s']:.0f} | {a['peak_rss_mb']:.0f} | {b['peak_rss_mb']:.0f} |")
    s = results["settings"]
    lines += ["", f"Model {s['model']}, LoRA r{s['lora_r']} on all linear layers, batch {s['batch']}, lr {s['lr']}; {s['steps']} measured steps after "
                  f"{s['warmup']} warm-up, best of {s['repeats']} interleaved runs, one process each (peak = its max RSS)."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="toolenv bench train-speed", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="model name or path")
    parser.add_argument("--pair", action="append", choices=list(PAIRS), default=[], help="repeatable; default all")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="measured steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="steps not measured at the start of each run")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs of each side")
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every run (default: the machine's)")
    parser.add_argument("--out", default=None, help="write train_speed.json and train_speed.md here")
    parser.add_argument("--worker", default=None, help=__import__("argparse").SUPPRESS)
    parser.add_argument("--json", default=None, help=__import__("argparse").SUPPRESS)
    args = parser.parse_args(argv)
    from agents.config import usage_error

    for name in ("batch_size", "steps", "repeats", "lora_r"):
        if getattr(args, name) < 1:
            usage_error(parser, f"expected --{name.replace('_', '-')} >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        usage_error(parser, f"expected --warmup >= 0, got {args.warmup}")
    if args.worker:
        result = _worker(args.worker, args.model, args.batch_size, args.steps, args.warmup, args.lora_r, args.lr)
        Path(args.json).write_text(json.dumps(result))
        return 0
    from agents.policy import check_model_name

    try:
        check_model_name(args.model)
    except ValueError as e:
        usage_error(parser, str(e))
    results = run_train_speed(args.model, args.pair or list(PAIRS), batch=args.batch_size, steps=args.steps, warmup=args.warmup,
                              repeats=args.repeats, lora_r=args.lora_r, lr=args.lr, out=args.out, threads=args.threads)
    print(format_train_speed_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
