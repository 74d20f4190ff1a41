"""DFSDT: ToolBench's depth-first search decision tree, as an inference strategy (StepTool's second column).

A chain-of-thought rollout (:func:`agents.rollout.rollout`) commits to every action it samples.
DFSDT (Qin et al. 2023, ToolLLM §3.2; ``DFS_tree_search`` with ``with_filter=False``) instead grows
a tree: from the current node it samples one action, plays it from that node's saved env state,
and goes down into the child; a child that ends its branch without an answer — a malformed action
(ToolBench prunes a reply it cannot parse), the env's step limit, the context length — sends the
search back to its parent, which samples another child (at most ``width`` per node). A node whose
children are all spent passes the search up to its own parent. The first final answer ends the
search (ToolBench's ``answer=1``); so does the budget of ``max_queries`` sampled actions (its
``max_query_count``). When a node already has children, the prompt for the next one lists them
with what they got back and asks for a different action (ToolBench's diversity prompt, in our
words); that message is shown for sampling only and never becomes part of the child's context.

Backtracking restores the env exactly with :func:`toolenv.snapshot` / :func:`toolenv.restore`.
Searches of many tasks run in lockstep: each round samples one action for every unfinished
search in a single batch. The trajectory returned per task is the path to its answer, or, when
no answer was found within the budget, the last branch explored; ``infos[-1]["search"]`` holds
``queries``, ``backtracks``, ``nodes`` and ``answered``.

Deliberate differences from ToolBench: it has no "give up and restart" action in toolenv's
protocols, so no give-up node backtracks two levels; and the answer is accepted as given (the
judge scores it afterwards), as in ToolBench, where the search never sees the verdict.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from agents.config import check_positive
from agents.policy import Policy
from agents.rollout import ChatFormat, GenerationSettings, Generator, HFGenerator, Trajectory, _Episode, _episode_inputs
from toolenv import restore, snapshot

__all__ = ["DFSDTSettings", "dfsdt"]

DIVERSITY_PROMPT = (
    "You have been at this point before. These were your earlier actions from here and what each got back:\n"
    "{previous}\n"
    "They did not lead to an answer. Take a different action from all of them."
)


@dataclass(frozen=True)
class DFSDTSettings:
    """``width``: children sampled per node at most (ToolBench's ``tree_beam_size``); ``max_queries``: sampled actions per task."""

    width: int = 2
    max_queries: int = 20
    diversity: bool = True

    def __post_init__(self) -> None:
        check_positive("width", self.width)
        check_positive("max_queries", self.max_queries)


@dataclass
class _Node:
    episode: _Episode
    state: Any  # the env's snapshot after this node's action (None when the branch ended here)
    parent: _Node | None = None
    observation: str = ""  # what the env answered this node's action (for the diversity prompt)
    children: list[_Node] = field(default_factory=list)
    tries: int = 0


@dataclass
class _Search:
    env: gym.Env
    root: _Node
    current: _Node
    last: _Node
    queries: int = 0
    backtracks: int = 0
    nodes: int = 1
    answer: _Node | None = None
    done: bool = False


def _child_episode(node: _Node) -> _Episode:
    ep = copy.copy(node.episode)
    ep.traj = copy.deepcopy(node.episode.traj)
    return ep


def _diversity_ids(fmt: ChatFormat, node: _Node) -> tuple[int, list[int]]:
    """``(k, ids)``: drop the context's last ``k`` tokens (the assistant prompt), append ``ids`` (the
    diversity message as a user turn, then the assistant prompt again)."""
    previous = [{"action": c.episode.traj.actions[-1], "observation": c.observation} for c in node.children]
    message = {"role": "user", "content": DIVERSITY_PROMPT.format(previous=json.dumps(previous, indent=2, ensure_ascii=False))}
    base = [{"role": "user", "content": "u"}]
    with_prompt = fmt._render(base, generation_prompt=True)
    without = fmt._render(base, generation_prompt=False)
    assistant_prompt = fmt.encode(with_prompt[len(without):])
    full = fmt._render(base + [message], generation_prompt=True)
    return len(assistant_prompt), fmt.encode(full[len(without):])


def dfsdt(
    policy: Policy,
    envs: gym.Env | Sequence[gym.Env] | Any,
    *,
    search: DFSDTSettings | None = None,
    settings: GenerationSettings | None = None,
    seeds: Sequence[int | None] | None = None,
    options: Sequence[dict[str, Any] | None] | None = None,
    env_ids: Sequence[str] | None = None,
    max_total_tokens: int | None = None,
    generator: Generator | None = None,
) -> list[Trajectory]:
    """One DFSDT search per env (each its own task), in lockstep batches; returns one trajectory per env.

    Arguments as :func:`agents.rollout.rollout`, plus ``search`` (width and query budget).
    Sampling settings apply to every action; DFSDT needs sampling (greedy would repeat a child).
    """
    search = search or DFSDTSettings()
    settings = settings or GenerationSettings(temperature=1.0)
    env_list, ids, seeds, options, max_total_tokens = _episode_inputs(policy, envs, seeds, options, env_ids, max_total_tokens)
    fmt = ChatFormat(policy.tokenizer)
    gen = generator or HFGenerator(policy)
    eos_ids = policy.eos_token_ids
    stop = tuple(env_list[0].unwrapped.protocol.stop) if env_list else ()  # type: ignore[attr-defined]
    searches = []
    for env, env_id, seed, opt in zip(env_list, ids, seeds, options):
        root = _Node(_Episode(env, env_id, fmt, seed, opt), snapshot(env))
        searches.append(_Search(env, root, root, root))

    while True:
        # 1. each unfinished search: climb out of spent nodes, then ask for one action at its node
        batch: list[tuple[_Search, list[int]]] = []
        for s in searches:
            if s.done:
                continue
            node = s.current
            while node.tries >= search.width:
                if node.parent is None:
                    s.done = True
                    break
                node, s.backtracks = node.parent, s.backtracks + 1
            if s.done:
                continue
            s.current = node
            prompt = node.episode.traj.token_ids
            if search.diversity and node.children:
                drop, extra = _diversity_ids(fmt, node)
                prompt = prompt[: len(prompt) - drop] + extra
            if len(prompt) + settings.max_new_tokens > max_total_tokens:  # no room for another action here
                node.tries = search.width
                continue
            batch.append((s, prompt))
        if not batch:
            if all(s.done for s in searches):
                break
            continue
        outputs = gen.generate([p for _, p in batch], settings, stop)
        # 2. play each action from its node's saved state; go down, stay, or stop
        for (s, _), (new_ids, logprobs) in zip(batch, outputs):
            node = s.current
            node.tries += 1
            s.queries += 1
            restore(s.env, node.state)
            ep = _child_episode(node)
            before = len(s.env.unwrapped.messages)  # type: ignore[attr-defined]
            ep.act(new_ids, logprobs, policy.tokenizer.decode(new_ids, skip_special_tokens=True), eos_ids)
            after = s.env.unwrapped.messages[before + 1 :]  # type: ignore[attr-defined]
            child = _Node(ep, None if ep.done else snapshot(s.env), parent=node, observation="\n".join(str(m.get("content", "")) for m in after))
            node.children.append(child)
            s.nodes += 1
            s.last = child
            if ep.traj.terminated:  # a final answer ends the search
                s.answer, s.done = child, True
            elif not ep.done and ep.traj.infos[-1].get("action_kind") != "invalid":
                s.current = child  # go down; a malformed action or a cut branch leaves the search here
            if s.queries >= search.max_queries:
                s.done = True

    out = []
    for s in searches:
        end = s.answer or s.last
        if s.answer is None and not end.episode.done and end.state is not None:  # the budget ran out mid-branch
            restore(s.env, end.state)
            end.episode.cut()
        traj = end.episode.traj
        if not traj.infos:  # not one action fitted: an empty, truncated episode
            traj.truncated = True
        else:
            traj.infos[-1]["search"] = {"queries": s.queries, "backtracks": s.backtracks, "nodes": s.nodes, "answered": s.answer is not None}
        out.append(traj)
    return out
