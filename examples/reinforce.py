"""REINFORCE with a group baseline: a complete new agent in one module, built on toolenv's shared parts.

It reuses the policy (LoRA on any causal LM), the rollout loop (token in, token out, per-step
rewards) and the token scorer; its result loads with ``toolenv eval --model OUT``.

Run it by module path, or register it under a name (see the README)::

    toolenv train examples.reinforce --model smollm2-135m --env toolenv/Math-v0 --out runs/reinforce --max-steps 20
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import torch

import toolenv  # noqa: F401  (registers the env ids)
from agents.config import TrainConfig, check_positive
from agents.rollout import GenerationSettings, rollout
from agents.utils import TokenScorer, collate, load_policy_for_training, set_seed


@dataclass
class Config(TrainConfig):
    """REINFORCE with the group mean as baseline."""

    out: str = field(default="runs/reinforce", metadata={"help": "output directory"})
    group_size: int = field(default=4, metadata={"help": "rollouts per task; their mean return is the baseline"})
    max_new_tokens: int = field(default=48, metadata={"help": "tokens per action at most"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("group_size", self.group_size)


def train(cfg: Config) -> Path:
    # 1. the policy, the scorer, the optimiser, one env per rollout of a group
    set_seed(cfg.seed)
    policy = load_policy_for_training(cfg)
    scorer = TokenScorer(policy.model)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.lr)
    envs = [gym.make(cfg.env[0], **cfg.env_kwargs) for _ in range(cfg.group_size)]
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens)
    num_tasks = len(envs[0].unwrapped.tasks)  # type: ignore[attr-defined]
    for step in range(cfg.max_steps):
        # 2. a group of episodes on one task (reset options share the task)
        task = {"index": step % num_tasks}
        trajs = rollout(policy, envs, settings=settings, options=[task] * cfg.group_size)
        # 3. advantages: episode return minus the group mean
        returns = torch.tensor([t.total_reward for t in trajs], device=policy.device)
        advantages = returns - returns.mean()
        # 4. policy gradient on the model's tokens
        batch = collate(trajs, policy.tokenizer.pad_token_id, policy.device)
        logprobs = scorer(**batch)
        loss = -(advantages[:, None] * logprobs * batch["loss_mask"]).sum() / batch["loss_mask"].sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return policy.save(cfg.out, extra={"agent": "reinforce"})
