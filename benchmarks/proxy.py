"""A proxy scale where RL algorithms can be compared on a CPU: a tiny model built in the run, a noisy expert.

``toolenv bench steptool --preset proxy`` uses this module. A shipped 135M model costs about
100 tokens/s on 2 cores, so a benchmark on it affords tens of samples per algorithm and one seed
— too few to tell algorithms apart. The proxy keeps every part of the real benchmark (the
APIChain env, its step-grained rewards, the rollout loop, each agent's training code) and
shrinks only the model:

- a byte-level BPE **tokenizer** (600 tokens) trained on the proxy tasks' gold episodes, and a
  2-layer **Llama** (hidden size 48) initialised from a seed (:func:`build_proxy_model`);
- a **noisy-expert warm start** (:func:`noisy_expert`): on each task the expert makes the right
  calls and then reports the right number one time in three, and a wrong number from its own tool
  outputs otherwise. Cloned, the policy calls reliably and answers right about a third of the
  time — a decision only the task's reward can correct, with room to improve;
- **sampled evaluation** (:func:`sampled_evaluation`): the same episodes for every model (tasks
  in turn, fixed reset seeds, torch seed 0, temperature 1), so two models are paired episode by
  episode.

The proxy measures optimisation — whether an algorithm raises the success of its own policy on
the tasks it trains on, at a fixed sample budget — not generalisation to unseen tasks: a model
trained from scratch on four tasks has nothing to generalise from.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

import toolenv  # noqa: F401  (registers the env ids)
from toolenv.types import ToolCall

__all__ = ["build_proxy_model", "noisy_expert", "proxy_tokenizer", "sampled_evaluation"]


def proxy_tokenizer(env_id: str, env_kwargs: dict[str, Any], *, vocab_size: int = 600) -> Any:
    """A byte-level BPE tokenizer trained on the gold episodes of the env's tasks, with the ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from agents.policy import CHATML_TEMPLATE

    env = gym.make(env_id, **env_kwargs)
    corpus = ["system user assistant tool"]
    for i in range(len(env.unwrapped.tasks)):  # type: ignore[attr-defined]
        env.reset(options={"index": i})
        for action in env.unwrapped.gold_actions():  # type: ignore[attr-defined]
            env.step(action)
        messages = env.unwrapped.messages  # type: ignore[attr-defined]
        corpus += [json.dumps(messages)] + [m["content"] for m in messages]
    env.close()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>", bos_token="<|im_start|>")
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_proxy_model(out: str | Path, env_id: str, env_kwargs: dict[str, Any], *, seed: int = 0) -> Path:
    """Save a tokenizer and a randomly initialised 2-layer Llama to ``out`` (loadable by ``Policy.load``)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out)
    tokenizer = proxy_tokenizer(env_id, env_kwargs)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=4096, tie_word_embeddings=True,
        initializer_range=0.3,  # frozen RMSNorm x embeddings of std 0.02 cannot express sharp logits
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def noisy_expert(env_id: str, env_kwargs: dict[str, Any], tokenizer: Any, *, wrong_call: bool = True) -> list[Any]:
    """Per level-1 APIChain task, three demonstrations, one of them right.

    - the gold episode: ``find_employee``, the right lookup, the right number;
    - the same calls, then the employee's salary as the answer (a right call sequence, a wrong answer);
    - with ``wrong_call``: ``find_employee``, then the *other* lookup on the employee's record
      (``get_city`` for a department question, ``get_department`` for a city one) and a number from
      it — a call that succeeds but contributes nothing, which only step-grained rewards single out;
      without it: the right calls and another integer field of the right lookup.
    """
    from agents.rollout import scripted_trajectory
    from toolenv.tools import apis

    env = gym.make(env_id, **env_kwargs)
    base: Any = env.unwrapped
    demos = []
    for i, task in enumerate(base.tasks):
        if len(task.solution) != 2 or task.solution[0].name != "find_employee":
            raise ValueError(f"Expected level-1 APIChain tasks (find_employee, then one lookup), got {[c.name for c in task.solution]} in {env_id}.")
        first, second = task.solution
        employee = apis.find_employee(first.arguments["name"])
        calls = base.gold_actions(task)[:-1]
        demos.append(scripted_trajectory(env, None, tokenizer, options={"index": i}, env_id=env_id))
        demos.append(scripted_trajectory(env, [*calls, base.protocol.format_answer(str(employee["salary"]))], tokenizer, options={"index": i},
                                         env_id=env_id))
        if wrong_call:
            other = "get_city" if second.name == "get_department" else "get_department"
            arguments = {"city": employee["city"]} if other == "get_city" else {"department": employee["department"]}
            looked_up = apis.API_TOOLS[other](**arguments)
            number = next(v for v in looked_up.values() if isinstance(v, int) and str(v) != task.answer)
            actions = [calls[0], base.protocol.format_call(ToolCall(other, arguments)), base.protocol.format_answer(str(number))]
        else:
            looked_up = apis.API_TOOLS[second.name](**second.arguments)
            number = next(v for v in looked_up.values() if isinstance(v, int) and str(v) != task.answer)
            actions = [*calls, base.protocol.format_answer(str(number))]
        demos.append(scripted_trajectory(env, actions, tokenizer, options={"index": i}, env_id=env_id))
    env.close()
    return demos


def sampled_evaluation(model: str | Path, env_id: str, env_kwargs: dict[str, Any], *, episodes: int, max_new_tokens: int,
                       out_dir: str | Path | None = None, temperature: float = 1.0, search: Any = None) -> dict[str, dict[str, float]]:
    """Play ``episodes`` sampled episodes (task ``i % n``, reset seed ``i``, torch seed 0) and report :func:`agents.evaluate.episode_metrics`.

    The same call on any model plays the same tasks with the same seeds, so models are paired
    episode by episode. With ``search`` (:class:`agents.search.DFSDTSettings`) each episode is a
    DFSDT search instead of one rollout. Writes ``metrics.json`` and ``trajectories.jsonl`` to ``out_dir``.
    """
    from agents.evaluate import episode_metrics, make_eval_env
    from agents.policy import Policy
    from agents.rollout import GenerationSettings, rollout, save_trajectories

    policy = Policy.load(str(model), device="cpu", trainable=False)
    envs = [make_eval_env(env_id, env_kwargs) for _ in range(episodes)]
    n_tasks = len(envs[0].unwrapped.tasks)  # type: ignore[attr-defined]
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        if search is not None:
            from agents.search import dfsdt

            play: Any = functools.partial(dfsdt, search=search)
        else:
            play = rollout
        trajectories = play(policy, envs, settings=GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature),
                            seeds=list(range(episodes)), options=[{"index": i % n_tasks} for i in range(episodes)], env_ids=[env_id] * episodes)
    finally:
        torch.random.set_rng_state(state)
    for env in envs:
        env.close()
    metrics = {env_id: episode_metrics(trajectories)}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_trajectories(out / "trajectories.jsonl", trajectories)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
