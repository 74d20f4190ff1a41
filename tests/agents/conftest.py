"""Tiny random models for agent tests: a byte-level BPE tokenizer trained here and a 2-layer Llama.

Nothing is downloaded; a model is a few hundred KB and builds in well under a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from agents.policy import CHATML_TEMPLATE, LoraSettings, Policy

_CORPUS = [
    "Given a math problem, solve it. You can use a calculator for help.",
    "calculator((12/60)*50) calculator(3+4) calculator(48/2) The answer is 72.",
    "Thought: I should use calculator. Action: calculator Action Input: {\"expression\": \"12*7\"}",
    "Final Answer: 84 Observation: <tool_call> </tool_call> {\"name\": \"calculator\", \"arguments\": {}}",
    "You can use these tools: - calculator(expression: string): Evaluate an arithmetic expression.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 24 42 48 50 60 72 84 100 + - * / ( ) = . , $ %",
    "system user assistant tool How many apples does she have now? buys gives shares each total",
]


def tiny_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>", bos_token="<|im_start|>")
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_model(vocab_size: int, seed: int = 0) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
        initializer_range=0.3,  # frozen RMSNorm x embeddings of std 0.02 cannot express sharp logits
    )
    return LlamaForCausalLM(config)


def tiny_policy(lora: bool = True, seed: int = 0) -> Policy:
    tok = tiny_tokenizer()
    model = tiny_model(len(tok), seed)
    policy = Policy(model, tok, base_name="tiny")
    if lora:
        from peft import LoraConfig, get_peft_model

        cfg = LoraSettings(r=4, alpha=8)
        policy.model = get_peft_model(model, LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, target_modules="all-linear", task_type="CAUSAL_LM"))
    return policy


@pytest.fixture
def policy() -> Policy:
    return tiny_policy()


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    """A saved tiny base model, loadable by ``Policy.load`` and the CLI."""
    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    out = tmp_path / "tiny-model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


class ScriptedGenerator:
    """A generation backend that plays fixed actions: episode ``i`` of a rollout writes ``scripts[i]``.

    It stands in for the model in :func:`agents.rollout.rollout`, so tests drive real envs
    through the real loop and check what a learner receives. Each prompt is matched to its
    episode by the token history it has produced so far (episodes on one task start alike).
    """

    def __init__(self, tokenizer: Any, scripts: list[list[str]]) -> None:
        self.tokenizer = tokenizer
        self.scripts = scripts
        self.history: list[list[int] | None] = [None] * len(scripts)
        self.cursor = [0] * len(scripts)

    def generate(self, prompts: list[list[int]], settings: Any, stop: Any) -> list[tuple[list[int], list[float]]]:
        out = []
        used: set[int] = set()
        for prompt in prompts:
            i = next(k for k in range(len(self.scripts)) if k not in used and (
                (self.history[k] is None and self.cursor[k] == 0) or
                (self.history[k] is not None and prompt[: len(self.history[k])] == self.history[k])))  # type: ignore[index]
            used.add(i)
            script = self.scripts[i]
            text = script[self.cursor[i]] if self.cursor[i] < len(script) else script[-1]
            self.cursor[i] += 1
            ids = list(self.tokenizer.encode(text, add_special_tokens=False)) + [self.tokenizer.convert_tokens_to_ids(self.tokenizer.eos_token)]
            self.history[i] = list(prompt) + ids
            out.append((ids, [-0.5] * len(ids)))
        return out
