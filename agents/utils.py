"""Pieces two or more agents share exactly: token batches, log-prob scoring, checkpoints, logging."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.config import TrainConfig, config_to_dict
from agents.policy import LoraSettings, Policy
from agents.rollout import Trajectory

__all__ = [
    "Checkpointer",
    "check_ranks_agree",
    "finish_run",
    "PackedPrefixes",
    "TokenScorer",
    "collate",
    "pack_shared_prefixes",
    "load_policy_for_training",
    "make_writer",
    "set_seed",
]

logger = logging.getLogger(__name__)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_policy_for_training(cfg: TrainConfig, *, device: str | None = None) -> Policy:
    """The policy a config asks for: a new LoRA adapter (``lora_r > 0``) or all weights trainable."""
    lora = LoraSettings(r=cfg.lora_r, alpha=cfg.lora_alpha) if cfg.lora_r > 0 else None
    policy = Policy.load(cfg.model, lora=lora, device=device or cfg.device, dtype=cfg.dtype, trainable=True)
    if lora is None and not policy.has_adapter:
        for p in policy.model.parameters():
            p.requires_grad_(True)
    if cfg.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad, so a LoRA adapter on frozen
        # embeddings works as is; it is active only in training mode (rollouts run in eval mode).
        model: Any = policy.model
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return policy


def collate(trajectories: Sequence[Trajectory], pad_id: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``loss_mask`` (the action mask) of a batch."""
    width = max(len(t.token_ids) for t in trajectories)
    n = len(trajectories)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    loss_mask = torch.zeros((n, width), dtype=torch.float32)
    for i, t in enumerate(trajectories):
        k = len(t.token_ids)
        input_ids[i, :k] = torch.tensor(t.token_ids, dtype=torch.long)
        attention[i, :k] = 1
        loss_mask[i, :k] = torch.tensor(t.action_mask, dtype=torch.float32)
    loss_mask[:, 0] = 0.0  # the first token has no prediction
    return {"input_ids": input_ids.to(device), "attention_mask": attention.to(device), "loss_mask": loss_mask.to(device)}


class TokenScorer(nn.Module):
    """Log-probability of each token given the ones before it, computed only where ``loss_mask`` is 1.

    The decoder runs on the whole sequence (right-padded batches without an attention mask: causal
    attention already keeps real tokens from the pads after them), but the LM head (the costliest layer of a small
    model: hidden × vocabulary) only at the labelled positions, ``chunk_size`` of them at a time
    (checkpointed under autograd, so no ``[positions, vocab]`` float32 tensor outlives its chunk). Rows
    that begin with the same tokens (a DPO pair, a GRPO group, RRHF's candidates, episodes of one env
    behind its instructions) are packed with ``share_prefixes`` so the prefix runs once
    (:func:`pack_shared_prefixes`; the first packed batch is checked against the full rows, and a
    model whose attention ignores the packing's 4D mask is scored in full). Wrapping the model in this module
    (rather than calling its submodules from outside) keeps it correct under DDP / ``accelerate``.

    ``forward`` returns a ``[batch, seq]`` tensor: entry ``t`` is ``log p(token_t | tokens_<t)``
    where ``loss_mask[:, t]`` is 1, and 0 elsewhere. With a ``value_head`` (a module mapping
    hidden states to one number, as PPO's critic) it returns ``(logprobs, values)``, the value of
    token ``t`` read from the same hidden state that predicts it.

    ``temperature`` scores under the distribution the rollouts sampled from, ``softmax(logits / T)``,
    as TRL's and verl's actors do: an RL agent sampling at ``T`` then optimises the policy it
    actually ran, and its first ratio is 1. The KL to a reference is taken at the same ``T``.
    """

    def __init__(self, model: nn.Module, value_head: nn.Module | None = None, *, temperature: float = 1.0, chunk_size: int = 256,
                 share_prefixes: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"Expected temperature > 0, got {temperature}.")
        if chunk_size < 1:
            raise ValueError(f"Expected chunk_size >= 1, got {chunk_size}.")
        self.model = model
        self.value_head = value_head
        self.temperature = temperature
        self.chunk_size = chunk_size
        self.share_prefixes = share_prefixes
        self._prefixes_checked = False

    def _picked(self, head: nn.Module, selected: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = head(selected).float()
        if self.temperature != 1.0:
            logits = logits / self.temperature
        return torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)

    def _log_probs(self, head: nn.Module, selected: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of ``targets``, ``chunk_size`` positions at a time.

        Under autograd each chunk is checkpointed: only its ``[chunk, vocab]`` logits exist at any
        moment, in the forward pass and again when the backward pass recomputes them, instead of
        ``[positions, vocab]`` float32 logits and their log-softmax kept until the backward pass.
        """
        if selected.shape[0] <= self.chunk_size:
            return self._picked(head, selected, targets)
        from torch.utils.checkpoint import checkpoint

        chunks = []
        for lo in range(0, selected.shape[0], self.chunk_size):
            s, t = selected[lo : lo + self.chunk_size], targets[lo : lo + self.chunk_size]
            if torch.is_grad_enabled() and s.requires_grad:
                chunks.append(checkpoint(self._picked, head, s, t, use_reentrant=False))
            else:
                chunks.append(self._picked(head, s, t))
        return torch.cat(chunks)

    def _parts(self) -> tuple[nn.Module, nn.Module]:
        model: Any = self.model
        base: Any = model.get_base_model() if hasattr(model, "get_base_model") else model
        decoder = getattr(base, base.base_model_prefix)
        return decoder, base.get_output_embeddings()

    def _hidden(self, decoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor,
                cols: torch.Tensor) -> torch.Tensor:
        """The decoder's hidden states at ``(rows, cols)``, rows sharing a prefix packed together when that is cheaper."""
        # Right padding (what ``collate`` makes): every real token precedes its row's pads, so causal
        # attention alone keeps them apart and positions are the same without the mask; dropped, the
        # attention runs SDPA's causal kernel instead of materialising [heads, L, L] weights per row.
        right_padded = bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())
        packed = pack_shared_prefixes(input_ids, attention_mask) if self.share_prefixes and right_padded else None
        if packed is not None and not self._prefixes_checked:
            # Once per scorer: the packed forward must give the unpacked one's hidden states (a model
            # whose attention ignores a 4D mask or explicit positions would not); otherwise stop packing.
            self._prefixes_checked = True
            with torch.no_grad():
                plain = decoder(input_ids=input_ids, use_cache=False).last_hidden_state[rows, cols]
                shared = decoder(input_ids=packed.input_ids, attention_mask=packed.attention_mask, position_ids=packed.position_ids,
                                 use_cache=False).last_hidden_state[packed.row[rows], packed.col[rows, cols]]
            if not torch.allclose(plain.float(), shared.float(), atol=1e-3, rtol=1e-3):
                logger.warning("This model's attention does not follow a 4D mask with explicit positions (max gap %.2g): "
                               "scoring without shared prefixes", float((plain.float() - shared.float()).abs().max()))
                self.share_prefixes, packed = False, None
        if packed is None:
            hidden = decoder(input_ids=input_ids, attention_mask=None if right_padded else attention_mask, use_cache=False).last_hidden_state
            return hidden[rows, cols]
        hidden = decoder(input_ids=packed.input_ids, attention_mask=packed.attention_mask, position_ids=packed.position_ids,
                         use_cache=False).last_hidden_state
        return hidden[packed.row[rows], packed.col[rows, cols]]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor) -> Any:
        decoder, head = self._parts()
        rows, cols = torch.nonzero(loss_mask[:, 1:] > 0, as_tuple=True)  # hidden at t predicts token t+1
        selected = self._hidden(decoder, input_ids, attention_mask, rows, cols)
        targets = input_ids[rows, cols + 1]
        picked = self._log_probs(head, selected, targets)
        out = torch.zeros(loss_mask.shape, dtype=picked.dtype, device=picked.device)
        out[rows, cols + 1] = picked
        if self.value_head is None:
            return out
        values = torch.zeros_like(out)
        values[rows, cols + 1] = self.value_head(selected.to(next(self.value_head.parameters()).dtype)).squeeze(-1).float()
        return out, values


@dataclass(frozen=True)
class PackedPrefixes:
    """Rows that share a prefix, packed: the prefix once, then each row's rest (see :func:`pack_shared_prefixes`).

    ``input_ids`` / ``position_ids`` are ``[packed rows, width]``, ``attention_mask`` a ``[packed rows, 1,
    width, width]`` boolean mask (a token sees its prefix and the earlier tokens of its own rest);
    token ``t`` of original row ``b`` sits at ``(row[b], col[b, t])``.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor


def pack_shared_prefixes(input_ids: torch.Tensor, attention_mask: torch.Tensor, *, min_prefix: int = 8,
                         max_fraction: float = 0.8) -> PackedPrefixes | None:
    """Pack right-padded rows that begin with the same tokens so the shared prefix is computed once.

    A DPO pair's chosen and rejected, a GRPO group's completions and RRHF's candidates for one
    question all repeat the same prompt; scoring each row in full runs the prompt through the model
    once per row. Here rows are grouped around the first row not yet grouped, with every later row
    that shares at least ``min_prefix`` tokens with it; a group's prefix is the shortest of those
    shared lengths (kept below every member's length, so each has its own next token). A packed row
    holds the prefix, then each member's rest; position ids restart after the prefix for each rest,
    and a 4D mask lets a token attend to the prefix and to its own rest only — so every hidden
    state equals the unpacked row's (the prefix-sharing of Wang et al. 2024, "Accelerating Direct
    Preference Optimization with Prefix Sharing", for any group of rows).

    Returns ``None`` when packing would not shrink the batch below ``max_fraction`` of its cells
    (rows × width), e.g. when no two rows share a prefix.
    """
    n, width = input_ids.shape
    if n < 2:
        return None
    lengths = attention_mask.sum(1).tolist()
    lcp = [(input_ids == input_ids[i]).long().cumprod(-1).sum(-1).tolist() for i in range(n)]  # shared leading tokens of each pair
    groups: list[tuple[int, list[int]]] = []  # (prefix length, rows)
    free = list(range(n))
    while free:
        anchor = free.pop(0)
        members = [anchor] + [j for j in free if min(lcp[anchor][j], lengths[anchor], lengths[j]) >= min_prefix]
        free = [j for j in free if j not in members]
        prefix = min([lengths[m] - 1 for m in members] + [lcp[anchor][j] for j in members[1:]]) if len(members) > 1 else lengths[anchor]
        groups.append((max(prefix, 0), members))
    widths = [p + sum(lengths[m] - p for m in ms) for p, ms in groups]
    if len(groups) * max(widths) > max_fraction * n * width:
        return None
    packed_width = max(widths)
    ids = torch.zeros((len(groups), packed_width), dtype=input_ids.dtype)
    positions = torch.zeros((len(groups), packed_width), dtype=torch.long)
    segment = torch.full((len(groups), packed_width), -1, dtype=torch.long)  # 0 the prefix, i + 1 member i's rest, -1 padding
    row = torch.zeros(n, dtype=torch.long)
    col = torch.zeros((n, width), dtype=torch.long)
    cpu_ids = input_ids.cpu()
    for r, (prefix, members) in enumerate(groups):
        ids[r, :prefix] = cpu_ids[members[0], :prefix]
        positions[r, :prefix] = torch.arange(prefix)
        segment[r, :prefix] = 0
        at = prefix
        for i, m in enumerate(members):
            rest = lengths[m] - prefix
            ids[r, at : at + rest] = cpu_ids[m, prefix : lengths[m]]
            positions[r, at : at + rest] = torch.arange(prefix, lengths[m])
            segment[r, at : at + rest] = i + 1
            row[m] = r
            col[m, :prefix] = torch.arange(prefix)
            col[m, prefix : lengths[m]] = torch.arange(at, at + rest)
            at += rest
        positions[r, at:] = torch.arange(packed_width - at)  # padding: any positions, seen by nothing real
    q = torch.arange(packed_width)
    causal = q[None, :] <= q[:, None]
    own = (segment[:, None, :] == 0) | (segment[:, None, :] == segment[:, :, None]) | (segment[:, :, None] == -1)
    mask = (causal[None] & own)[:, None]
    device = input_ids.device
    return PackedPrefixes(ids.to(device), positions.to(device), mask.to(device), row.to(device), col.to(device))


def make_writer(cfg: TrainConfig, algo: str, run_name: str | None = None) -> tuple[Any, str]:
    """A TensorBoard writer under ``{out}/runs/{env}__{algo}__{seed}__{time}``, with the hyperparameters as a table."""
    from torch.utils.tensorboard import SummaryWriter

    if run_name is None:
        env = "+".join(e.split("/")[-1] for e in cfg.env)
        run_name = f"{env}__{algo}__{cfg.seed}__{int(time.time())}"
    writer = SummaryWriter(str(Path(cfg.out) / "runs" / run_name))
    rows = "\n".join(f"|{k}|{v}|" for k, v in config_to_dict(cfg).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{rows}")
    return writer, run_name


class Checkpointer:
    """Save and restore training state in ``{out}/checkpoint`` so a killed run continues where it stopped.

    The state is the trainable parameters, the optimiser and scheduler, the step, the RNG states,
    and anything else the agent passes (plain values). It is written to ``checkpoint.tmp`` (a
    ``COMPLETE`` marker last), then swapped in: the old checkpoint is moved to ``checkpoint.old``
    and the new one renamed into place. A run killed at any point of a save keeps a good
    checkpoint: at the next start a complete ``checkpoint.tmp`` or else ``checkpoint.old`` is put
    back when ``checkpoint`` is missing. Loading uses ``torch.load(weights_only=True)``, so a
    planted file cannot run code; a damaged checkpoint is a clear error that names it.
    """

    def __init__(self, out: str | Path, cfg: TrainConfig) -> None:
        self.dir = Path(out) / "checkpoint"
        self.tmp = self.dir.with_name("checkpoint.tmp")
        self.old = self.dir.with_name("checkpoint.old")
        self.cfg = config_to_dict(cfg)
        self._recover()

    def _recover(self) -> None:
        """Finish a swap that a kill interrupted (``checkpoint`` missing, a complete copy aside)."""
        if (self.dir / "state.pt").exists():
            return
        for candidate in (self.tmp, self.old):
            if (candidate / "COMPLETE").exists() or (candidate is self.old and (candidate / "state.pt").exists()):
                shutil.rmtree(self.dir, ignore_errors=True)
                os.replace(candidate, self.dir)
                return

    def exists(self) -> bool:
        return (self.dir / "state.pt").exists()

    def save(self, step: int, model: nn.Module, optimizer: Any, scheduler: Any = None, **extra: Any) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "step": step,
            "params": trainable,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": {"python": random.getstate(), "torch": torch.get_rng_state(),
                    "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)]},
            "extra": extra,
        }
        try:
            self.tmp.mkdir(parents=True)
            torch.save(state, self.tmp / "state.pt")
            (self.tmp / "config.json").write_text(json.dumps(self.cfg, indent=2, default=str))
            (self.tmp / "COMPLETE").write_text(str(step))
        except (OSError, RuntimeError) as e:  # a full disk surfaces as "enforce fail at inline_container.cc"
            shutil.rmtree(self.tmp, ignore_errors=True)
            free = shutil.disk_usage(self.tmp.parent).free
            raise OSError(f"Could not write the checkpoint to {self.tmp} ({free / 2**20:.0f} MB free on that disk): {e}. "
                          f"The previous checkpoint in {self.dir} is intact.") from None
        shutil.rmtree(self.old, ignore_errors=True)
        if self.dir.exists():
            os.replace(self.dir, self.old)
        os.replace(self.tmp, self.dir)
        shutil.rmtree(self.old, ignore_errors=True)

    def load(self, model: nn.Module, optimizer: Any, scheduler: Any = None) -> tuple[int, dict[str, Any]]:
        """Restore into ``model``/``optimizer``/``scheduler``; returns ``(step, extra)``."""
        try:
            saved_cfg = json.loads((self.dir / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"The checkpoint in {self.dir} is damaged (config.json: {e}); delete it or use another --out.") from None
        changed = {k for k in self.cfg if k not in ("max_steps", "progress", "save_every", "log_every", "gradient_checkpointing", "share_prefixes") and saved_cfg.get(k) != json.loads(json.dumps(self.cfg[k], default=str))}
        if changed:
            raise ValueError(
                f"The checkpoint in {self.dir} was made with different settings ({sorted(changed)}); "
                "use another --out or delete the checkpoint."
            )
        try:
            state = torch.load(self.dir / "state.pt", map_location="cpu", weights_only=True)
            params = dict(model.named_parameters())
            with torch.no_grad():
                for name, value in state["params"].items():
                    params[name].copy_(value)
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state["scheduler"] is not None:
                scheduler.load_state_dict(state["scheduler"])
            random.setstate(_tuples(state["rng"]["python"]))
            kind, keys, pos, has_gauss, cached = state["rng"]["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
            torch.set_rng_state(state["rng"]["torch"])
            return int(state["step"]), dict(state["extra"])
        except Exception as e:  # a truncated zip, a planted pickle (refused by weights_only), missing keys
            raise ValueError(f"The checkpoint in {self.dir} is damaged or not a toolenv checkpoint "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                             "delete it or use another --out.") from None


def _tuples(value: Any) -> Any:
    """Lists back to tuples (``random.setstate`` wants the tuple ``random.getstate`` gave)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def linear_warmup(optimizer: Any, warmup_steps: int) -> Any:
    """A LambdaLR that warms the learning rate up linearly, then keeps it constant."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup_steps) if warmup_steps else 1.0)


def check_ranks_agree(accelerator: Any, model: nn.Module, out: str | Path | None = None) -> list[float]:
    """Checksums of the trainable weights on every rank; raises if data-parallel ranks diverged.

    With one process this is just the local checksum. With several, each rank's checksum is
    gathered; the main process writes them to ``{out}/rank_checksums.json``.
    """
    with torch.no_grad():
        total = torch.zeros((), dtype=torch.float64)
        for i, p in enumerate(q for q in model.parameters() if q.requires_grad):
            total += (p.detach().double().cpu() * (1.0 + 1e-3 * i)).sum()
    sums = accelerator.gather(total.reshape(1).to(accelerator.device)).cpu().tolist()
    if out is not None and accelerator.is_main_process:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "rank_checksums.json").write_text(json.dumps(sums))
    if max(sums) - min(sums) > 1e-6 * max(1.0, abs(sums[0])):
        raise RuntimeError(f"Data-parallel ranks ended with different weights: checksums {sums}.")
    return [float(x) for x in sums]


def finish_run(
    accelerator: Any,
    cfg: TrainConfig,
    policy: Policy,
    trained: nn.Module,
    optimizer: Any,
    scheduler: Any,
    checkpointer: Checkpointer,
    writer: Any,
    *,
    agent: str,
    run_name: str | None,
    extra: dict[str, Any] | None = None,
    files: dict[str, Any] | None = None,
) -> Path:
    """The end of every training run: ranks agree, the policy is saved where ``toolenv eval --model OUT``
    finds it (plus any ``files`` as ``torch.save``d objects, e.g. a critic), the final checkpoint, the writer closed.

    ``trained`` is the module whose trainable weights are checked and checkpointed (the policy's
    model, or a scorer that also holds a value head).
    """
    out = Path(cfg.out)
    accelerator.wait_for_everyone()
    check_ranks_agree(accelerator, trained, out)
    if accelerator.is_main_process:
        policy.save(out, merged=cfg.merge, extra={"agent": agent, "steps": cfg.max_steps, **(extra or {})})
        for name, obj in (files or {}).items():
            torch.save(obj, out / name)
        checkpointer.save(cfg.max_steps, trained, optimizer, scheduler, run_name=run_name, **(extra or {}))
        if writer is not None:
            writer.close()
    return out
