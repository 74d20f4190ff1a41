"""The rollout loop every agent shares: a policy drives a batch of toolenv envs for whole episodes.

Token in, token out. The tokens the model generated are kept exactly as generated (never
decoded and re-tokenised), with their log-probabilities; observations are appended as the
tokens of the chat template's tool turn. Each :class:`Trajectory` carries the token ids, an
action mask (1 on model tokens), the index of the last token of every action, each step's
reward and its named terms, and the env infos — everything PPO, DPO, RRHF or BC needs.

Generation goes through a backend: :class:`HFGenerator` (a batched decoding loop with the KV cache, which
a rollout's next turn continues instead of re-prefilling the episode) here, :class:`VLLMGenerator` on
a GPU, :class:`OpenAIServerGenerator` for a served model. Finished episodes drop out of the batch.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import torch

from agents.config import check_in
from agents.policy import Policy

__all__ = [
    "ChatFormat",
    "GenerationSettings",
    "Generator",
    "HFGenerator",
    "Trajectory",
    "OpenAIServerGenerator",
    "VLLMGenerator",
    "chat_trajectory",
    "load_trajectories",
    "rollout",
    "rollout_groups",
    "save_trajectories",
    "scripted_trajectory",
    "step_rewards_of",
    "with_call_text",
]

logger = logging.getLogger(__name__)

_INFO_KEYS = ("action_kind", "calls", "calls_ok", "tool_outputs", "answer", "error", "success", "num_tool_calls",
              "tool_used", "num_format_errors", "turns", "reward_raw", "step_rewards", "step_reward_terms")


@dataclass
class GenerationSettings:
    """How actions are sampled."""

    max_new_tokens: int = field(default=96, metadata={"help": "tokens per action at most"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (ignored when greedy)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass"})
    greedy: bool = field(default=False, metadata={"help": "argmax decoding (evaluation)"})

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"Expected max_new_tokens >= 1, got {self.max_new_tokens}.")
        if not self.greedy and self.temperature <= 0:
            raise ValueError(f"Expected temperature > 0 when sampling, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"Expected top_p in (0, 1], got {self.top_p}.")


@dataclass
class Trajectory:
    """One episode in tokens, with everything learners need.

    Attributes:
        env_id: The env's registered id.
        task: ``info["task"]`` from reset (id, question, gold answer, gold solution).
        token_ids: Prompt, actions and observations, in order.
        action_mask: 1 on tokens the model generated, 0 on prompt and observation tokens.
        logprobs: Log-probability of each token under the sampling policy (0 where mask is 0).
        action_ends: Index into ``token_ids`` of the last token of each action (one per step).
        rewards: The env's reward of each step.
        reward_terms: ``info["reward_terms"]`` of each step.
        infos: A JSON-safe subset of each step's ``info``.
        actions: Each action's text, decoded for reading (training uses the tokens).
        prompt_length: Number of prompt tokens at the start of ``token_ids``.
        terminated: The task ended (an answer was given).
        truncated: The episode was cut (turn limit, ``TimeLimit``, or the context length).
    """

    env_id: str
    task: dict[str, Any]
    token_ids: list[int] = field(default_factory=list)
    action_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    action_ends: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    reward_terms: list[dict[str, float]] = field(default_factory=list)
    infos: list[dict[str, Any]] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    prompt_length: int = 0
    terminated: bool = False
    truncated: bool = False

    @property
    def success(self) -> bool:
        return bool(self.infos and self.infos[-1].get("success"))

    @property
    def total_reward(self) -> float:
        return float(sum(self.rewards))

    @property
    def num_model_tokens(self) -> int:
        return int(sum(self.action_mask))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trajectory:
        return cls(**d)


def save_trajectories(path: str | Path, trajectories: Iterable[Trajectory], *, append: bool = False) -> Path:
    """Write trajectories as JSON Lines, one per line."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if append and p.exists() and p.stat().st_size:
        with p.open("r+b") as f:  # a last record without its newline: end it before appending
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
    with p.open("a" if append else "w", encoding="utf-8") as f:
        for t in trajectories:
            f.write(json.dumps(t.to_dict(), ensure_ascii=False) + "\n")
    return p


def load_trajectories(path: str | Path) -> list[Trajectory]:
    """Read trajectories written by :func:`save_trajectories`; a malformed line is named by file and line."""
    out = []
    with Path(path).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(Trajectory.from_dict(json.loads(line)))
            except (ValueError, TypeError) as e:
                raise ValueError(f"{path}, line {lineno}: not a trajectory ({type(e).__name__}: {e}).") from None
    return out


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


_WARNED_NO_TOOL_CALLS = False


def _warn_no_tool_calls_once() -> None:
    global _WARNED_NO_TOOL_CALLS
    if not _WARNED_NO_TOOL_CALLS:
        _WARNED_NO_TOOL_CALLS = True
        logger.warning("The chat template ignores assistant tool_calls; each call's text is kept in the assistant "
                       "turn's content instead (<tool_call>{...}</tool_call>), so no turn renders empty.")


def with_call_text(message: dict[str, Any]) -> dict[str, Any]:
    r"""An assistant message whose ``tool_calls`` are written into its content as the model writes them.

    The JSON protocol keeps a call turn's visible text in ``content`` and the calls in
    ``tool_calls`` (OpenAI's layout). A template that ignores ``tool_calls`` would render that
    turn empty; this is the same turn as text, which is also exactly the model's action.

    >>> with_call_text({"role": "assistant", "content": "Let me add.", "tool_calls": [
    ...     {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "1+2"}}}]})["content"]
    'Let me add.\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "1+2"}}\n</tool_call>'
    """
    calls = message.get("tool_calls")
    if message.get("role") != "assistant" or not calls:
        return message
    from toolenv.protocols import JsonProtocol
    from toolenv.types import ToolCall

    fmt = JsonProtocol()
    parts = [str(message.get("content") or "").strip()]
    for call in calls:
        fn = call.get("function", call)
        args = fn.get("arguments") or {}
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                args = {"input": args}
        parts.append(fmt.format_call(ToolCall(str(fn.get("name", "")), dict(args))))
    return {k: v for k, v in message.items() if k != "tool_calls"} | {"content": "\n".join(p for p in parts if p)}


class ChatFormat:
    """Renders prompts and observations as tokens of a tokenizer's chat template.

    Observation tokens are the template's text between the end of one assistant turn and the
    start of the next one, found by rendering a conversation with and without the new messages.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.eos_token = tokenizer.eos_token
        probe = "PROBE_ASSISTANT_TEXT"
        self._base = [{"role": "user", "content": "u"}, {"role": "assistant", "content": probe}]
        base_text = self._render(self._base, generation_prompt=False)
        tail = base_text[base_text.rindex(probe) + len(probe) :]  # e.g. "<|im_end|>\n"
        self._turn_close = tail
        self._base_text = base_text
        self._close_after_eos = tail[len(self.eos_token) :] if tail.startswith(self.eos_token) else tail

    @functools.cached_property
    def renders_tool_calls(self) -> bool:
        """Whether the chat template shows an assistant message's ``tool_calls`` (SmolLM2's does not)."""
        probe = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "",
                  "tool_calls": [{"type": "function", "function": {"name": "PROBE_TOOL_NAME", "arguments": {}}}]}]
        try:
            return "PROBE_TOOL_NAME" in self.tokenizer.apply_chat_template(probe, tokenize=False)
        except Exception:
            return False

    def _render(self, messages: list[dict[str, Any]], *, generation_prompt: bool, tools: Any = None) -> str:
        if any(m.get("tool_calls") for m in messages) and not self.renders_tool_calls:
            _warn_no_tool_calls_once()
            messages = [with_call_text(m) for m in messages]
        return self.tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=generation_prompt, tokenize=False
        )

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt_ids(self, messages: list[dict[str, Any]], tools: Any = None) -> list[int]:
        """Tokens of the conversation so far plus the assistant generation prompt."""
        return self.encode(self._render(messages, generation_prompt=True, tools=tools))

    def observation_ids(self, new_messages: list[dict[str, Any]], *, action_ended_with_eos: bool) -> list[int]:
        """Tokens that close the model's turn, carry ``new_messages``, and open the next assistant turn."""
        messages = [self._normalise(m) for m in new_messages]
        try:
            full = self._render(self._base + messages, generation_prompt=True)
        except Exception:  # templates without a tool role: send tool output as a user turn
            messages = [{"role": "user", "content": m["content"]} for m in messages]
            full = self._render(self._base + messages, generation_prompt=True)
        if not full.startswith(self._base_text):
            raise ValueError("The chat template does not render conversations as prefixes of each other.")
        close = self._close_after_eos if action_ended_with_eos else self._turn_close
        return self.encode(close + full[len(self._base_text) :])

    def action_ids(self, text: str) -> list[int]:
        """Tokens of a scripted action as the model would emit it: the text, then end of turn."""
        return self.encode(text) + [self.tokenizer.convert_tokens_to_ids(self.eos_token)]

    @staticmethod
    def _normalise(message: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in message.items() if k in ("role", "content", "name")}


class Generator(Protocol):
    """A generation backend: continue each prompt with one action."""

    def generate(self, prompts: list[list[int]], settings: GenerationSettings, stop: Sequence[str]) -> list[tuple[list[int], list[float]]]:
        """For each prompt, the new tokens (cut after the end-of-turn token or a stop string) and their log-probs."""
        ...


@functools.cache
def _cache_arg() -> str:
    """``generate``'s name for a cache to continue from: ``cache`` in current transformers, ``past_key_values`` before."""
    from transformers.generation.utils import GenerateDecoderOnlyOutput

    return "cache" if "cache" in GenerateDecoderOnlyOutput.__dataclass_fields__ else "past_key_values"


def _left_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of ``rows``, left-padded to the longest."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids, mask


def _extendable(cache: Any) -> bool:
    """Whether a cache can be continued by appending tokens (sliding-window or recurrent caches cannot)."""
    from transformers import DynamicCache

    return type(cache) is DynamicCache and all(type(layer).__name__ == "DynamicLayer" for layer in getattr(cache, "layers", []))


def _shared_prefix_length(prompts: list[list[int]]) -> int:
    """How many leading tokens every prompt shares, kept below the shortest prompt's length (each row runs at least one token)."""
    first, limit = prompts[0], min(len(p) for p in prompts) - 1
    n = 0
    while n < limit and all(p[n] == first[n] for p in prompts):
        n += 1
    return n


def _top_p_filtered(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """``scores`` with the tokens outside the nucleus at -inf (transformers' ``TopPLogitsWarper``, keeping at least one)."""
    ordered, order = torch.sort(scores, descending=False)
    drop = ordered.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
    drop[..., -1:] = False
    return scores.masked_fill(drop.scatter(1, order, drop), -math.inf)


_PREFILL_OVERHEAD = 64  # the cost of one forward, in padded cells (:func:`_prefill_groups`)


def _prefill_groups(lengths: list[int], overhead: int | None = None) -> list[list[int]]:
    """Rows grouped by length so that prefilling each group padded to its own longest row costs least.

    The cost of a group is its rows times its longest row (the padded cells a forward computes) plus
    ``overhead`` cells for the forward itself (reading the weights once, measured on 2 CPU cores at
    about 64 tokens of prefill; ``_PREFILL_OVERHEAD``); rows sorted by length, the best split is found by
    dynamic programming.
    """
    overhead = _PREFILL_OVERHEAD if overhead is None else overhead
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    ordered = [lengths[i] for i in order]
    best, cut = [0] + [0] * len(order), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        best[end], cut[end] = min((best[begin] + (end - begin) * ordered[end - 1] + overhead, begin) for begin in range(end))
    groups, end = [], len(order)
    while end:
        groups.append(order[cut[end] : end])
        end = cut[end]
    return groups[::-1]


def _grouped_prefill(model: Any, ids: torch.Tensor, positions: torch.Tensor, attention: torch.Tensor, cache: Any,
                     kwargs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
    """The last position's logits of every row and the cache after prefilling ``ids`` (the uncached columns, left-padded),
    run in groups of similar length (:func:`_prefill_groups`) instead of all rows padded to the longest.

    Each group's new keys and values are put back at the columns the whole batch's left padding gives
    them, the columns in between left as zeros; those are padding, masked out by ``attention``.
    """
    from transformers import DynamicCache

    device = model.device
    start, width = attention.shape[1] - ids.shape[1], ids.shape[1]
    real = attention[:, start:].sum(-1).tolist()
    groups = _prefill_groups(real)

    def whole_batch() -> tuple[torch.Tensor, Any]:
        out = model(input_ids=ids.to(device), attention_mask=attention.to(device), position_ids=positions.to(device),
                    **kwargs, **({_cache_arg(): cache} if cache is not None else {}))
        return out.logits[:, -1, :], getattr(out, _cache_arg())

    if len(groups) == 1 or not (cache is None or _extendable(cache)):
        return whole_batch()
    rows = len(real)
    logits: torch.Tensor | None = None
    result: Any = None  # the first group's cache, its layers given the whole batch's keys and values at the end
    full: list[tuple[torch.Tensor, torch.Tensor]] = []
    for group in groups:
        index, w = torch.tensor(group, device=device), max(real[i] for i in group)
        on_cpu = index.cpu()
        keep = list(range(start)) + list(range(start + width - w, start + width))
        sub = None
        if cache is not None:
            sub = DynamicCache(ddp_cache_data=[(layer.keys[index], layer.values[index]) for layer in cache.layers])
        out = model(input_ids=ids[on_cpu][:, width - w :].to(device), attention_mask=attention[on_cpu][:, keep].to(device),
                    position_ids=positions[on_cpu][:, width - w :].to(device), **kwargs, **({_cache_arg(): sub} if sub is not None else {}))
        got = getattr(out, _cache_arg())
        if not _extendable(got):  # a sliding-window or recurrent cache: the whole batch at once after all
            return whole_batch()
        last = out.logits[:, -1, :]
        if logits is None:
            logits = last.new_empty((rows, last.shape[-1]))
            result = got
            full = [(layer.keys.new_zeros((rows, layer.keys.shape[1], start + width, layer.keys.shape[3])),
                     layer.values.new_zeros((rows, layer.values.shape[1], start + width, layer.values.shape[3]))) for layer in got.layers]
        logits[index] = last
        for (k, v), layer in zip(full, got.layers):  # the columns between the cached part and this group's tokens stay zero
            k[index, :, :start], k[index, :, start + width - w :] = layer.keys[:, :, :start], layer.keys[:, :, start:]
            v[index, :, :start], v[index, :, start + width - w :] = layer.values[:, :, :start], layer.values[:, :, start:]
        del out, got, sub
    for (k, v), layer in zip(full, result.layers):
        layer.keys, layer.values = k, v
    return logits, result


@dataclass
class _Decoded:
    """What :func:`_decode` returns: ``tokens``/``logprobs`` ``[batch, steps]`` (pad and 0 after a row ended), the cache
    of every row (``None`` unless asked for), and how many of each row's generated tokens it holds."""

    tokens: torch.Tensor
    logprobs: torch.Tensor
    cache: Any
    cached_new: list[int]


@torch.no_grad()
def _decode(model: Any, input_ids: torch.Tensor, attention: torch.Tensor, cache: Any, settings: GenerationSettings,
            eos_ids: Sequence[int], pad: int, stopped: Any, *, keep_cache: bool) -> _Decoded:
    """Generate up to ``settings.max_new_tokens`` tokens for each row, dropping rows from the batch as they end.

    ``input_ids``/``attention`` are the whole left-padded batch; ``cache`` (or ``None``) holds its first
    positions, and only the rest is prefilled. Each step is what ``model.generate`` does (positions from
    the attention mask, logits of the last position only, greedy argmax or sampling at the temperature
    within top-p, transformers' order), with each chosen token's log-probability under the model's own
    distribution (temperature 1) recorded. Unlike ``generate``, a row that ended (an end-of-turn token,
    or ``stopped(row_tokens)``) stops costing compute: once a quarter of the batch has ended, those rows
    leave it, their cache set aside; with ``keep_cache`` it is put back at the end (right-padded, positions
    past each row's end to be masked by the caller), so the next turn can continue every row.
    """
    rows, device = input_ids.shape[0], model.device
    steps = settings.max_new_tokens
    tokens = torch.full((rows, steps), pad, dtype=torch.long)
    logprobs = torch.zeros((rows, steps))
    live = list(range(rows))  # original row of each row of the running batch
    ended = [False] * rows
    leaving: list[tuple[list[int], list[Any]]] = []  # rows set aside, with their cache per layer
    cached_new = [0] * rows
    eos = set(eos_ids)
    positions = (attention.cumsum(-1) - 1).masked_fill(attention == 0, 0)
    start = cache.get_seq_length() if cache is not None else 0
    kwargs: dict[str, Any] = {"use_cache": True}
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT model passes it on
    if "logits_to_keep" in inspect.signature(base.forward).parameters:
        kwargs["logits_to_keep"] = 1  # the prefill's other positions need no logits
    step_ids, step_pos, mask = input_ids[:, start:], positions[:, start:], attention
    n = 0
    while n < steps:
        if n == 0:
            last, cache = _grouped_prefill(model, step_ids, step_pos, mask, cache, kwargs)
        else:
            out = model(input_ids=step_ids.to(device), attention_mask=mask.to(device), position_ids=step_pos.to(device),
                        **kwargs, **{_cache_arg(): cache})
            last, cache = out.logits[:, -1, :], getattr(out, _cache_arg())
        scores = last.float().cpu()
        logp = torch.log_softmax(scores, dim=-1)
        if settings.greedy:
            chosen = scores.argmax(dim=-1)
        else:
            if settings.temperature != 1.0:
                scores = scores / settings.temperature
            if settings.top_p < 1.0:
                scores = _top_p_filtered(scores, settings.top_p)
            chosen = torch.multinomial(scores.softmax(dim=-1), num_samples=1).squeeze(1)
        index = torch.tensor(live)
        done = torch.tensor([ended[r] for r in live])
        chosen = chosen.masked_fill(done, pad)
        tokens[index, n] = chosen
        logprobs[index, n] = logp.gather(1, chosen[:, None]).squeeze(1).masked_fill(done, 0.0)
        n += 1
        for r, t in zip(live, chosen.tolist()):
            if not ended[r] and (t in eos or stopped(tokens[r, :n].tolist())):
                ended[r] = True
        if all(ended[r] for r in live) or n == steps:
            break
        gone = [k for k, r in enumerate(live) if ended[r]]
        if gone and len(gone) >= len(live) // 4 and _extendable(cache):
            stay = [k for k, r in enumerate(live) if not ended[r]]
            if keep_cache:
                leaving.append(([live[k] for k in gone], [(layer.keys[gone], layer.values[gone]) for layer in cache.layers]))
            for k in gone:
                cached_new[live[k]] = n - 1
            cache.batch_select_indices(torch.tensor(stay, device=device))
            live, chosen, mask, step_pos = [live[k] for k in stay], chosen[stay], mask[stay], step_pos[stay]
        step_ids = chosen[:, None]
        step_pos = step_pos[:, -1:] + 1
        mask = torch.cat([mask, torch.ones((len(live), 1), dtype=mask.dtype)], dim=1)
    for r in live:
        cached_new[r] = n - 1
    if not keep_cache:
        return _Decoded(tokens[:, :n], logprobs[:, :n], None, cached_new)
    if leaving and cache is not None:
        length = cache.get_seq_length()
        order = live + [r for group, _ in leaving for r in group]
        back = torch.tensor(sorted(range(rows), key=order.__getitem__), device=device)
        for i, layer in enumerate(cache.layers):
            parts_k, parts_v = [layer.keys], [layer.values]
            for _, kept in leaving:
                k, v = kept[i]
                kept[i] = None  # freed as soon as this layer is put together
                pad_width = (0, 0, 0, length - k.shape[-2])
                parts_k.append(torch.nn.functional.pad(k, pad_width))
                parts_v.append(torch.nn.functional.pad(v, pad_width))
            layer.keys, layer.values = torch.cat(parts_k)[back], torch.cat(parts_v)[back]
    return _Decoded(tokens[:, :n], logprobs[:, :n], cache, cached_new)


class _TurnCache:
    """The KV cache one :meth:`HFGenerator.generate` call left, kept for the next turn of the same episodes.

    ``layout``/``mask`` are the batch's token ids and attention mask at the cached positions
    (left padding, then each row's prompt and generated tokens; positions after a row's cut are
    masked out), ``rows`` each row's tokens those positions hold, in order, and ``kept`` each
    row's whole sequence after the call (prompt + cut action: what the next prompt must start with).
    """

    def __init__(self, cache: Any, layout: torch.Tensor, mask: torch.Tensor, rows: list[list[int]], kept: list[list[int]],
                 version: tuple[int, ...]) -> None:
        self.cache, self.layout, self.mask, self.rows, self.kept, self.version = cache, layout, mask, rows, kept, version

    def match(self, prompts: list[list[int]]) -> list[int] | None:
        """For each prompt, a row whose kept sequence it extends (rows tried in order first); ``None`` if one has none."""
        picks, nxt = [], 0
        for p in prompts:
            order = [*range(nxt, len(self.kept)), *range(nxt)]
            r = next((r for r in order if len(p) > len(self.kept[r]) and p[: len(self.kept[r])] == self.kept[r]), None)
            if r is None:
                return None
            picks.append(r)
            nxt = r + 1
        return picks


class HFGenerator:
    """Batched generation (KV cache, left padding) with per-token log-probabilities: the tokens ``model.generate``
    gives, from a loop (:func:`_decode`) that drops rows from the batch as they end and prefills rows in groups
    of similar length (:func:`_grouped_prefill`), so that short rows do not pay for long ones. Sampling
    applies the settings' temperature and top-p only (nothing from the model's generation config).

    With ``reuse_cache`` (what :func:`rollout` uses), a turn continues from the KV cache the
    previous call left instead of re-prefilling the episode: when every prompt extends one of the
    previous call's sequences, only the new tokens (the observation) are run through the model,
    padded between the cached part and the new part, with positions taken from the attention mask
    as in any left-padded batch; the tokens and log-probs equal re-prefilling's up to float
    rounding (``tests/agents/test_rollout.py``). A call whose prompts do not all extend the last
    call's, weights changed in place since (an optimiser step), or a cache more than half padding,
    prefills afresh. :meth:`release` drops the cache; :func:`rollout` does at its end.

    A fresh prefill whose prompts all begin with the same ``min_shared_prefix`` tokens or more (an
    env's instructions and tool descriptions; a GRPO group's whole prompt) runs that prefix once and
    copies its cache to every row, which then continues as a later turn does (vLLM's prefix caching,
    within one batch); with ``reuse_cache`` only.
    """

    def __init__(self, policy: Policy, *, reuse_cache: bool = False, min_shared_prefix: int = 16) -> None:
        self.policy = policy
        self.eos_ids = policy.eos_token_ids
        self.reuse_cache = reuse_cache
        self.min_shared_prefix = min_shared_prefix
        self._turn: _TurnCache | None = None
        self.prefilled_tokens = 0  # tokens run through the model before generation, over all calls (what reuse saves)

    def release(self) -> None:
        """Forget the cached turn (its memory is freed)."""
        self._turn = None

    def _weights_version(self) -> tuple[int, ...]:
        return tuple(p._version for p in self.policy.trainable_parameters())

    def _continuation(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, Any, list[int]] | None:
        """Input ids, attention mask and cache continuing the cached turn, and each row's number of cached tokens; ``None`` to prefill."""
        turn = self._turn
        if turn is None or turn.version != self._weights_version():
            return None
        picks = turn.match(prompts)
        if picks is None:
            return None
        cached = [len(turn.rows[r]) for r in picks]
        if 2 * max(len(p) for p in prompts) < turn.layout.shape[1]:
            return None  # mostly padding: a fresh prefill is cheaper than carrying it
        new_ids, new_mask = _left_padded([p[c:] for p, c in zip(prompts, cached)], self.policy.tokenizer.pad_token_id)
        index = torch.tensor(picks, dtype=torch.long)
        cache = turn.cache
        if picks != list(range(len(turn.kept))):
            cache.batch_select_indices(index.to(self.policy.device))
        input_ids = torch.cat([turn.layout[index], new_ids], dim=1)
        attention = torch.cat([turn.mask[index], new_mask], dim=1)
        return input_ids, attention, cache, cached

    def _after_prefix(self, prompts: list[list[int]], shared: int) -> tuple[torch.Tensor, torch.Tensor, Any, list[int]]:
        """The layout of a batch continuing a cached prefix of ``shared`` tokens (the cache itself is made in :meth:`generate`)."""
        new_ids, new_mask = _left_padded([p[shared:] for p in prompts], self.policy.tokenizer.pad_token_id)
        head = torch.tensor([prompts[0][:shared]] * len(prompts), dtype=torch.long)
        return (torch.cat([head, new_ids], dim=1), torch.cat([torch.ones_like(head), new_mask], dim=1), None,
                [shared] * len(prompts))

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], settings: GenerationSettings, stop: Sequence[str]) -> list[tuple[list[int], list[float]]]:
        tok = self.policy.tokenizer
        pad = tok.pad_token_id
        device = self.policy.device
        continued = self._continuation(prompts) if self.reuse_cache else None
        self._turn = None
        prefix: list[int] = []  # a prefix every prompt shares, prefilled once below
        if continued is None and self.reuse_cache and len(prompts) > 1:
            shared = _shared_prefix_length(prompts)
            if shared >= self.min_shared_prefix:
                prefix = prompts[0][:shared]
                continued = self._after_prefix(prompts, shared)
        if continued is not None:
            input_ids, attention, cache, cached = continued
            self.prefilled_tokens += sum(len(p) - c for p, c in zip(prompts, cached)) + len(prefix)
        else:
            input_ids, attention = _left_padded(prompts, pad)
            cache = None
            self.prefilled_tokens += sum(len(p) for p in prompts)
        stops = [s for s in stop if s]

        def stopped(ids: list[int]) -> bool:
            return bool(stops) and any(tok.decode(ids, skip_special_tokens=True).endswith(s) for s in stops)

        model = self.policy.model
        was_training = model.training
        model.eval()
        try:
            with self.policy.merged_weights():
                if prefix:
                    cache = getattr(model(input_ids=torch.tensor([prefix], device=device), use_cache=True), _cache_arg(), None)
                    if _extendable(cache):
                        cache.batch_repeat_interleave(len(prompts))
                    else:  # a cache that cannot be continued this way: prefill every row in full
                        input_ids, attention = _left_padded(prompts, pad)
                        cache = None
                        self.prefilled_tokens += (len(prompts) - 1) * len(prefix)  # the rows' prefixes, counted once above
                out = _decode(model, input_ids, attention, cache, settings, self.eos_ids, pad, stopped, keep_cache=self.reuse_cache)
        finally:
            if was_training:
                model.train()
        results = []
        for i in range(len(prompts)):
            ids = self._cut(out.tokens[i].tolist(), stop)
            results.append((ids, out.logprobs[i, : len(ids)].tolist()))
        if self.reuse_cache:
            self._keep(out, input_ids, attention, prompts, [ids for ids, _ in results])
        return results

    def _keep(self, out: _Decoded, input_ids: torch.Tensor, attention: torch.Tensor, prompts: list[list[int]],
              actions: list[list[int]]) -> None:
        """Keep the cache :func:`_decode` left, with which of its positions hold which row's tokens."""
        if not _extendable(out.cache):
            return
        generated = out.cache.get_seq_length() - attention.shape[1]  # the last token generated has no KV yet
        if generated < 0:
            return
        width = attention.shape[1]
        mask = torch.cat([attention, torch.ones((len(prompts), generated), dtype=torch.long)], dim=1)
        rows = []
        for i, (p, a) in enumerate(zip(prompts, actions)):
            held = min(len(a), out.cached_new[i])
            mask[i, width + held :] = 0  # after the cut or where the row had left the batch: padding or text past a stop string
            rows.append(p + a[:held])
        layout = torch.cat([input_ids, out.tokens[:, :generated]], dim=1)
        self._turn = _TurnCache(out.cache, layout, mask, rows, [p + a for p, a in zip(prompts, actions)], self._weights_version())

    def _cut(self, ids: list[int], stop: Sequence[str]) -> list[int]:
        """The generated tokens up to and including the end-of-turn token; padding removed."""
        pad = self.policy.tokenizer.pad_token_id
        for k, t in enumerate(ids):
            if t in self.eos_ids:
                if t == pad and stop:
                    text = self.policy.tokenizer.decode(ids[:k], skip_special_tokens=True)
                    if any(text.rstrip().endswith(s.strip()) for s in stop):
                        return ids[:k]  # stopped on a stop string; this is padding, not an EOS
                return ids[: k + 1]
            if t == pad:
                return ids[:k]
        return ids


class VLLMGenerator:
    """vLLM ``LLM.generate`` on token prompts, with weights pushed from the trained policy (vLLM >= 0.10's V1 engine).

    Needs a GPU and the ``vllm`` package. The engine is built with toolenv's worker extension
    (:mod:`agents.vllm_worker`) and :meth:`sync_weights` sends the policy's current weights
    (adapter folded in) through ``LLM.collective_rpc`` — the route vLLM documents for RLHF weight
    updates, which replaced reaching into ``llm_engine.model_executor.driver_worker`` (gone with the
    V1 engine). Colocated with the trainer, the engine runs in-process
    (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, as TRL's colocate mode sets it), so the tensors are not copied
    between processes; weights go over in buckets of ``sync_bucket_mb``.
    """

    def __init__(self, policy: Policy, *, gpu_memory_utilization: float = 0.3, sync_bucket_mb: int = 512, **llm_kwargs: Any) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        from agents.policy import resolve_model

        self.policy = policy
        self.sync_bucket_bytes = sync_bucket_mb * 2**20
        self.llm = LLM(model=resolve_model(policy.base_name), gpu_memory_utilization=gpu_memory_utilization, dtype="bfloat16",
                       enable_prefix_caching=True, worker_extension_cls="agents.vllm_worker.ToolenvWorkerExtension", **llm_kwargs)
        self.eos_ids = policy.eos_token_ids
        self.sync_weights()

    def _named_weights(self) -> Iterable[tuple[str, torch.Tensor]]:
        with self.policy.merged_weights() as model:
            for name, tensor in model.state_dict().items():
                if "lora_" not in name:
                    yield name.removeprefix("base_model.model.").replace(".base_layer", ""), tensor

    @torch.no_grad()
    def sync_weights(self) -> int:
        """Push the policy's current weights into every vLLM worker; returns how many tensors were loaded."""
        loaded, bucket, size = 0, [], 0
        for name, tensor in self._named_weights():
            bucket.append((name, tensor.detach()))
            size += tensor.numel() * tensor.element_size()
            if size >= self.sync_bucket_bytes:
                loaded += self._send(bucket)
                bucket, size = [], 0
        if bucket:
            loaded += self._send(bucket)
        self.llm.reset_prefix_cache()
        return loaded

    def _send(self, bucket: list[tuple[str, torch.Tensor]]) -> int:
        counts = self.llm.collective_rpc("toolenv_load_weights", args=(bucket,))
        return int(counts[0]) if counts else 0

    def generate(self, prompts: list[list[int]], settings: GenerationSettings, stop: Sequence[str]) -> list[tuple[list[int], list[float]]]:
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(
            max_tokens=settings.max_new_tokens,
            temperature=0.0 if settings.greedy else settings.temperature,
            top_p=1.0 if settings.greedy else settings.top_p,
            stop=list(stop) or None,
            stop_token_ids=self.eos_ids,
            include_stop_str_in_output=True,
            logprobs=0,
        )
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        return [_ids_and_logprobs(list(o.outputs[0].token_ids), o.outputs[0].logprobs) for o in outputs]


def _ids_and_logprobs(ids: list[int], logprobs: Any) -> tuple[list[int], list[float]]:
    """vLLM's per-token logprob dicts (the sampled token's entry) as a list aligned with ``ids``."""
    out = []
    for k, d in enumerate(logprobs or []):
        if k >= len(ids):
            break
        entry = d.get(ids[k]) if isinstance(d, dict) else None
        if entry is None and d:
            entry = next(iter(d.values()))
        out.append(float(getattr(entry, "logprob", entry)) if entry is not None else 0.0)
    return ids, out + [0.0] * (len(ids) - len(out))


class OpenAIServerGenerator:
    """Generation on a vLLM (or SGLang) OpenAI-compatible server: token ids in, token ids and log-probs out.

    For rollouts on another GPU or node (``vllm serve MODEL``). Each prompt goes to
    ``/v1/completions`` as token ids (``prompt: [ids]``), with ``logprobs=0`` and vLLM's
    ``return_tokens_as_token_ids`` so the reply carries the sampled token ids (``"token_id:123"``)
    and their log-probabilities, and ``stop_token_ids`` for the chat template's end of turn — so the
    trajectory holds exactly the tokens the server sampled, as with the in-process backends.
    Weights are the server's: ``sync`` (a callable), when given, is called by :meth:`sync_weights`
    to push the trainer's weights (e.g. TRL's ``vllm-serve`` client); without it, syncing is an error.
    """

    def __init__(self, base_url: str, model: str, policy: Policy, *, timeout: float = 600.0, max_concurrency: int = 64,
                 sync: Any = None) -> None:
        self.url = base_url.rstrip("/") + "/v1/completions"
        self.model = model
        self.eos_ids = policy.eos_token_ids
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self._sync = sync

    def sync_weights(self) -> None:
        if self._sync is None:
            raise RuntimeError("This server generator has no way to receive weights: pass sync=callable (e.g. a TRL vllm-serve client's "
                               "update), or restart the server on the saved policy.")
        self._sync()

    def _one(self, client: Any, prompt: list[int], settings: GenerationSettings, stop: Sequence[str]) -> tuple[list[int], list[float]]:
        body = {
            "model": self.model, "prompt": prompt, "max_tokens": settings.max_new_tokens,
            "temperature": 0.0 if settings.greedy else settings.temperature, "top_p": 1.0 if settings.greedy else settings.top_p,
            "logprobs": 0, "return_tokens_as_token_ids": True, "stop_token_ids": list(self.eos_ids), "stop": list(stop) or None,
            "include_stop_str_in_output": True, "skip_special_tokens": False,
        }
        reply = client.post(self.url, json=body, timeout=self.timeout)
        reply.raise_for_status()
        choice = reply.json()["choices"][0]
        lp = choice.get("logprobs") or {}
        tokens = lp.get("tokens") or []
        ids = []
        for t in tokens:
            if not str(t).startswith("token_id:"):
                raise ValueError(f"Expected tokens as 'token_id:N' (vLLM's return_tokens_as_token_ids), got {t!r}: is this a vLLM server?")
            ids.append(int(str(t).split(":", 1)[1]))
        logprobs = [float(x) if x is not None else 0.0 for x in (lp.get("token_logprobs") or [])][: len(ids)]
        return ids, logprobs + [0.0] * (len(ids) - len(logprobs))

    def generate(self, prompts: list[list[int]], settings: GenerationSettings, stop: Sequence[str]) -> list[tuple[list[int], list[float]]]:
        from concurrent.futures import ThreadPoolExecutor

        import httpx

        with httpx.Client() as client, ThreadPoolExecutor(max_workers=min(self.max_concurrency, max(1, len(prompts)))) as pool:
            return list(pool.map(lambda p: self._one(client, list(p), settings, stop), prompts))


def _unwrap_envs(envs: gym.Env | Sequence[gym.Env] | Any) -> list[gym.Env]:
    if isinstance(envs, gym.vector.SyncVectorEnv):
        return list(envs.envs)
    if isinstance(envs, gym.vector.VectorEnv):
        raise TypeError("Expected a list of envs or a SyncVectorEnv; an AsyncVectorEnv hides its envs' chat messages.")
    if isinstance(envs, gym.Env):
        return [envs]
    return list(envs)


class _Episode:
    """Bookkeeping of one env's episode while the batch runs."""

    def __init__(self, env: gym.Env, env_id: str, fmt: ChatFormat, seed: int | None, options: dict[str, Any] | None) -> None:
        self.env = env
        self.fmt = fmt
        obs, info = env.reset(seed=seed, options=options)
        base = env.unwrapped
        self.messages_seen = len(base.messages)  # type: ignore[attr-defined]
        prompt = fmt.prompt_ids(list(base.messages))  # type: ignore[attr-defined]
        self.traj = Trajectory(env_id=env_id, task=info["task"], token_ids=list(prompt),
                               action_mask=[0] * len(prompt), logprobs=[0.0] * len(prompt), prompt_length=len(prompt))
        self.done = False

    def cut(self) -> None:
        """End the episode early (turn or token budget): truncated, with the env's end-of-episode info."""
        self.traj.truncated, self.done = True, True
        self._add_end_info()

    def _add_end_info(self) -> None:
        """A truncated episode's end-of-episode info (hindsight step rewards), as a terminated one has."""
        end_info = getattr(self.env.unwrapped, "end_info", None)
        if self.traj.infos and callable(end_info):
            try:
                extra = end_info()
            except Exception as e:
                logger.warning("%s: end_info raised %s: %s", self.traj.env_id, type(e).__name__, e)
                return
            self.traj.infos[-1].update({k: _json_safe(v) for k, v in extra.items() if k in _INFO_KEYS})

    def act(self, ids: list[int], logprobs: list[float], text: str, eos_ids: Sequence[int]) -> None:
        t = self.traj
        t.token_ids.extend(ids)
        t.action_mask.extend([1] * len(ids))
        t.logprobs.extend(logprobs)
        t.action_ends.append(len(t.token_ids) - 1)
        t.actions.append(text)
        try:
            _, reward, terminated, truncated, info = self.env.step(text)
        except Exception as e:  # an env bug must not end a training or eval run: a failed, recorded step
            logger.warning("%s: env.step raised %s: %s; the episode ends here (truncated)", t.env_id, type(e).__name__, e)
            reward, terminated, truncated = 0.0, False, True
            info = {"error": f"env.step raised {type(e).__name__}: {e}", "success": False}
        t.rewards.append(float(reward))
        t.reward_terms.append(dict(info.get("reward_terms", {})))
        t.infos.append({k: _json_safe(info[k]) for k in _INFO_KEYS if k in info})
        t.terminated, t.truncated = bool(terminated), bool(truncated)
        self.done = bool(terminated or truncated)
        if truncated and not terminated:
            self._add_end_info()
        if not self.done:
            messages = self.env.unwrapped.messages  # type: ignore[attr-defined]
            new = [m for m in messages[self.messages_seen + 1 :] if m["role"] != "assistant"]
            self.messages_seen = len(messages)
            obs_ids = self.fmt.observation_ids(new, action_ended_with_eos=bool(ids) and ids[-1] in eos_ids)
            t.token_ids.extend(obs_ids)
            t.action_mask.extend([0] * len(obs_ids))
            t.logprobs.extend([0.0] * len(obs_ids))


def _episode_inputs(policy: Policy, envs: Any, seeds: Sequence[int | None] | None, options: Sequence[dict[str, Any] | None] | None,
                    env_ids: Sequence[str] | None, max_total_tokens: int | None) -> tuple[list[gym.Env], list[str], list[Any], list[Any], int]:
    """The envs as a list, with one id, seed and options entry each, and the context budget (default: the model's length)."""
    if max_total_tokens is None:
        max_total_tokens = int(getattr(getattr(policy.model, "config", None), "max_position_embeddings", 0) or 4096)
    env_list = _unwrap_envs(envs)
    n = len(env_list)
    seeds = list(seeds) if seeds is not None else [None] * n
    options = list(options) if options is not None else [None] * n
    if len(seeds) != n or len(options) != n:
        raise ValueError(f"Expected one seed and one options entry per env ({n}), got {len(seeds)} and {len(options)}.")
    ids = list(env_ids) if env_ids is not None else [e.spec.id if e.spec else type(e.unwrapped).__name__ for e in env_list]
    return env_list, ids, list(seeds), list(options), max_total_tokens


def rollout(
    policy: Policy,
    envs: gym.Env | Sequence[gym.Env] | Any,
    *,
    settings: GenerationSettings | None = None,
    seeds: Sequence[int | None] | None = None,
    options: Sequence[dict[str, Any] | None] | None = None,
    env_ids: Sequence[str] | None = None,
    max_turns: int | None = None,
    max_total_tokens: int | None = None,
    generator: Generator | None = None,
) -> list[Trajectory]:
    """Play one episode in each env with ``policy``, in one batch; return the trajectories in env order.

    Args:
        policy: The model that acts.
        envs: A list of toolenv envs (made with ``gym.make``) or a ``SyncVectorEnv``.
        settings: Sampling settings (default: sampling at temperature 1, 96 tokens per action).
        seeds: Reset seed of each env.
        options: Reset options of each env, e.g. ``{"index": 3}`` to give a group one task.
        env_ids: Ids recorded in the trajectories (default: each env's spec id).
        max_turns: Stop episodes after this many actions (truncated), on top of the envs' own limits.
        max_total_tokens: An episode whose context would pass this many tokens is truncated
            (default: the model's context length, ``max_position_embeddings``, or 4096).
        generator: The generation backend (default: :class:`HFGenerator` continuing its KV cache across
            turns). A backend with a ``release()`` method has it called when the rollout ends.
    """
    settings = settings or GenerationSettings()
    env_list, ids, seeds, options, max_total_tokens = _episode_inputs(policy, envs, seeds, options, env_ids, max_total_tokens)
    fmt = ChatFormat(policy.tokenizer)
    gen = generator or HFGenerator(policy, reuse_cache=True)
    try:
        return _play(policy, gen, env_list, ids, seeds, options, fmt, settings, max_turns, max_total_tokens)
    finally:
        release = getattr(gen, "release", None)
        if release is not None:
            release()


def _play(policy: Policy, gen: Generator, env_list: list[gym.Env], ids: Sequence[str], seeds: Sequence[int | None],
          options: Sequence[dict[str, Any] | None], fmt: ChatFormat, settings: GenerationSettings, max_turns: int | None,
          max_total_tokens: int) -> list[Trajectory]:
    eos_ids = policy.eos_token_ids
    episodes = [_Episode(e, i, fmt, s, o) for e, i, s, o in zip(env_list, ids, seeds, options)]
    stop = tuple(env_list[0].unwrapped.protocol.stop) if env_list else ()  # type: ignore[attr-defined]
    turn = 0
    while True:
        active = [ep for ep in episodes if not ep.done]
        if not active:
            break
        if max_turns is not None and turn >= max_turns:
            for ep in active:
                ep.cut()
            break
        for ep in active:
            if len(ep.traj.token_ids) + settings.max_new_tokens > max_total_tokens:
                ep.cut()
        active = [ep for ep in active if not ep.done]
        if not active:
            break
        outputs = gen.generate([ep.traj.token_ids for ep in active], settings, stop)
        for ep, (new_ids, logprobs) in zip(active, outputs):
            text = policy.tokenizer.decode(new_ids, skip_special_tokens=True)
            ep.act(new_ids, logprobs, text, eos_ids)
        turn += 1
    return [ep.traj for ep in episodes]


def rollout_groups(
    policy: Policy,
    pools: dict[str, list[gym.Env]],
    tasks: Sequence[tuple[str, int]],
    group_size: int,
    *,
    settings: GenerationSettings,
    env_kwargs: dict[str, Any] | None = None,
) -> list[Trajectory]:
    """``group_size`` episodes of each ``(env_id, index)`` task, all in one :func:`rollout` call.

    Envs come from ``pools`` (one list per env id, grown with ``gym.make`` as needed and kept for
    the next call); the trajectories of task ``k`` are ``[k * group_size, (k + 1) * group_size)``.
    """
    envs: list[gym.Env] = []
    options: list[dict[str, Any] | None] = []
    env_ids: list[str] = []
    used = dict.fromkeys(pools, 0)
    for env_id, index in tasks:
        pool = pools.setdefault(env_id, [])
        used.setdefault(env_id, 0)
        for _ in range(group_size):
            if used[env_id] >= len(pool):
                pool.append(gym.make(env_id, **(env_kwargs or {})))
            envs.append(pool[used[env_id]])
            used[env_id] += 1
            options.append({"index": index})
            env_ids.append(env_id)
    return rollout(policy, envs, settings=settings, options=options, env_ids=env_ids) if envs else []


_NO_HINDSIGHT_WARNED: set[str] = set()


def step_rewards_of(traj: Trajectory, source: str) -> list[float]:
    """Each step's reward: the env's hindsight ``step_rewards`` (end-of-episode info) or the immediate ones.

    With ``source="hindsight"``, an env that gives no hindsight rewards (the math envs) falls
    back to the immediate rewards, with a warning once per env id; hindsight rewards of the
    wrong length are an error (they would credit the wrong steps).
    """
    check_in("source", source, ("hindsight", "immediate"))
    if source == "hindsight" and traj.infos:
        hindsight = traj.infos[-1].get("step_rewards")
        if isinstance(hindsight, list):
            if len(hindsight) != len(traj.rewards):
                raise ValueError(f"Expected one hindsight step reward per step ({len(traj.rewards)}) in {traj.env_id}, "
                                 f"got {len(hindsight)}.")
            return [float(r) for r in hindsight]
        if traj.env_id not in _NO_HINDSIGHT_WARNED:
            _NO_HINDSIGHT_WARNED.add(traj.env_id)
            logger.warning("%s gives no hindsight step rewards; using its immediate rewards.", traj.env_id)
    return list(traj.rewards)


def scripted_trajectory(
    env: gym.Env,
    actions: Sequence[str] | None,
    tokenizer: Any,
    *,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    env_id: str | None = None,
) -> Trajectory:
    """An episode played by fixed actions (default: the env's gold actions), laid out exactly like a rollout.

    This is how expert demonstrations become training data: the same tokens, masks and
    observations a policy would see, with the env's real tool outputs.
    """
    fmt = ChatFormat(tokenizer)
    eos_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    ep = _Episode(env, env_id or (env.spec.id if env.spec else ""), fmt, seed, options)
    script = list(actions) if actions is not None else env.unwrapped.gold_actions()  # type: ignore[attr-defined]
    for text in script:
        if ep.done:
            break
        ids = fmt.action_ids(text)
        ep.act(ids, [0.0] * len(ids), text, [eos_id])
    return ep.traj


def chat_trajectory(
    messages: Sequence[dict[str, Any]],
    tokenizer: Any,
    *,
    env_id: str = "",
    task: dict[str, Any] | None = None,
) -> Trajectory:
    """A chat transcript (``system``/``user``, then ``assistant`` and ``tool`` turns) laid out like a rollout.

    The messages before the first assistant turn are the prompt; each assistant turn is an action
    (its text, then end of turn; action mask 1, or 0 when the message has ``"train": false``: a
    turn shown but not learnt, such as a failed call kept as a lesson); the ``tool`` or ``user`` messages after it are the
    observation, rendered by :class:`ChatFormat` exactly as :func:`rollout` renders an env's
    messages. So the transcript of an env episode gives the same tokens as
    :func:`scripted_trajectory` playing the same actions in that env. Non-assistant messages after
    the last assistant turn carry nothing to learn and are dropped. The trajectory is marked
    successful and terminated: it is a demonstration (as from ``toolenv ste build``).

    Args:
        messages: Chat messages with ``role`` and ``content`` (tool messages may carry ``name``).
        tokenizer: The policy's tokenizer, with a chat template.
        env_id: Recorded in the trajectory.
        task: Recorded as the trajectory's task (default: ``{"question": <last user message of the prompt>}``).
    """
    roles = [m.get("role") for m in messages]
    if "assistant" not in roles:
        raise ValueError(f"Expected a chat with at least one assistant turn, got roles {roles}.")
    first = roles.index("assistant")
    if first == 0:
        raise ValueError("Expected the chat to start with a prompt (system or user messages), got an assistant turn first.")
    fmt = ChatFormat(tokenizer)
    eos_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    prompt_messages = [ChatFormat._normalise(m) for m in messages[:first]]
    if task is None:
        users = [m["content"] for m in prompt_messages if m.get("role") == "user"]
        task = {"question": users[-1] if users else ""}
    prompt = fmt.prompt_ids(prompt_messages)
    traj = Trajectory(env_id=env_id, task=dict(task), token_ids=list(prompt), action_mask=[0] * len(prompt),
                      logprobs=[0.0] * len(prompt), prompt_length=len(prompt))
    i = first
    while i < len(messages):
        text = str(with_call_text(dict(messages[i])).get("content") or "")
        ids = fmt.action_ids(text)
        traj.token_ids.extend(ids)
        traj.action_mask.extend([0 if messages[i].get("train") is False else 1] * len(ids))
        traj.logprobs.extend([0.0] * len(ids))
        traj.action_ends.append(len(traj.token_ids) - 1)
        traj.actions.append(text)
        traj.rewards.append(0.0)
        traj.reward_terms.append({})
        traj.infos.append({})
        j = i + 1
        while j < len(messages) and messages[j].get("role") != "assistant":
            j += 1
        if j < len(messages):  # another action follows: its observation opens the next turn
            new = list(messages[i + 1 : j])
            obs_ids = fmt.observation_ids(new, action_ended_with_eos=ids[-1] == eos_id)
            traj.token_ids.extend(obs_ids)
            traj.action_mask.extend([0] * len(obs_ids))
            traj.logprobs.extend([0.0] * len(obs_ids))
        i = j
    traj.infos[-1]["success"] = True
    traj.terminated = True
    return traj


def mean(values: Iterable[float]) -> float:
    vals = list(values)
    return float(sum(vals) / len(vals)) if vals else math.nan
