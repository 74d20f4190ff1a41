"""The fields every agent's config shares, validation helpers, and command-line parsing from dataclasses.

An agent's config is a dataclass that subclasses :class:`TrainConfig`; every field carries help
text in ``metadata["help"]`` and ``__post_init__`` validates, naming the field, the value and the
allowed set. :func:`config_parser` turns such a dataclass into an argparse parser, so a new
agent gets ``toolenv train NAME --field value ...`` without writing any CLI code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from toolenv.cli import ArgumentParser

__all__ = ["TrainConfig", "check_in", "check_out_dir", "check_positive", "usage_error", "config_from_args", "config_parser", "config_to_dict"]


def usage_error(parser: argparse.ArgumentParser, message: str) -> typing.NoReturn:
    """Exit with status 2 and one line, ``PROG: error: MESSAGE`` (argparse's ``error`` also prints the usage block)."""
    parser.exit(2, f"{parser.prog}: error: {message}\n")


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` naming the field unless ``value > 0`` (or ``>= 0``)."""
    import math

    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"Expected {name} to be a finite number, got {value!r}.")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"Expected {name} {bound}, got {value!r}.")


def check_out_dir(path: str, name: str = "out") -> None:
    """Raise ``ValueError`` unless ``path`` is a directory or could become one (no file on the way)."""
    from pathlib import Path

    p = Path(path).expanduser()
    for q in (p, *p.parents):
        if q.exists() and not q.is_dir():
            raise ValueError(f"Expected {name} to be a directory, but {str(q)!r} is a file.")
        if q.exists():
            return


def check_in(name: str, value: Any, allowed: typing.Collection[Any]) -> None:
    """Raise ``ValueError`` naming the field, the value and the allowed values."""
    if value not in allowed:
        raise ValueError(f"Expected {name} to be one of {sorted(allowed)}, got {value!r}.")


@dataclass
class TrainConfig:
    """What every agent needs: model, envs, output, budget, optimiser and adapter settings."""

    model: str = field(default="smollm2-135m", metadata={"help": "base model: shipped name, local directory, hub id, or a saved agent output"})
    env: list[str] = field(default_factory=lambda: ["toolenv/Math-v0"], metadata={"help": "env ids to train on (repeat for a mixture)"})
    env_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "kwargs for every env, as JSON"})
    out: str = field(default="runs/agent", metadata={"help": "output directory: final policy, checkpoints, TensorBoard logs"})
    max_steps: int = field(default=100, metadata={"help": "optimiser steps"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    lr: float = field(default=2e-4, metadata={"help": "learning rate (AdamW)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warm-up steps"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0 disables)"})
    batch_size: int = field(default=8, metadata={"help": "sequences per optimiser step"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (0 trains all weights)"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 on CUDA, fp32 on CPU), float32 or bfloat16"})
    save_every: int = field(default=50, metadata={"help": "checkpoint every N steps (resume continues from the last)"})
    log_every: int = field(default=5, metadata={"help": "log scalars every N steps"})
    merge: bool = field(default=False, metadata={"help": "save merged full weights instead of the adapter"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute each decoder layer's activations in the backward pass instead of keeping them (far less memory, about a third more compute)"})
    share_prefixes: bool = field(default=True, metadata={
        "help": "score sequences that begin alike (a DPO pair, a GRPO group, RRHF's candidates) with their shared prefix computed once"})

    def __post_init__(self) -> None:
        if isinstance(self.env, str):
            self.env = [self.env]
        if not self.env:
            raise ValueError("Expected at least one env id in env, got [].")
        for name in ("max_steps", "batch_size", "save_every", "log_every", "lr"):
            check_positive(name, getattr(self, name))
        for name in ("lora_r", "warmup_steps", "max_grad_norm", "weight_decay"):
            check_positive(name, getattr(self, name), allow_zero=True)
        check_in("device", self.device.split(":")[0], {"auto", "cpu", "cuda"})
        check_in("dtype", self.dtype, {"auto", "float32", "fp32", "bfloat16", "bf16"})
        if not isinstance(self.env_kwargs, dict):
            raise ValueError(f"Expected env_kwargs to be a dict of env kwargs, got {self.env_kwargs!r}.")
        check_out_dir(self.out)
        # Everything that can be checked before a model or a dataset is loaded, is.
        import toolenv

        for env_id in self.env:
            toolenv.check_env_args(env_id, self.env_kwargs)
        from agents.policy import check_model_name, resolve_device

        resolve_device(self.device)
        check_model_name(self.model)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _arg_type(tp: Any) -> tuple[Any, dict[str, Any]]:
    """argparse ``type`` and extra kwargs for a field type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        non_null = [a for a in args if a is not type(None)]
        return _arg_type(non_null[0])
    if origin is list:
        inner, _ = _arg_type(args[0] if args else str)
        return inner, {"action": "append"}
    if origin is dict or tp is dict:
        return json.loads, {}
    if tp is bool:
        return None, {"action": argparse.BooleanOptionalAction}
    if origin is typing.Literal:
        return type(args[0]), {"choices": list(args)}
    return tp, {}


def config_parser(
    config_cls: type, *, prog: str | None = None, description: str | None = None, defaults: dict[str, Any] | None = None
) -> argparse.ArgumentParser:
    """An argparse parser with one ``--field-name`` option per dataclass field.

    ``defaults`` (a registered variant's, e.g. ``step-ppo``'s) are the defaults the help shows.
    Env kwargs are ``--kw KEY=VALUE`` (repeatable), as on every other command.
    """
    parser = ArgumentParser(prog=prog, description=description or (config_cls.__doc__ or "").strip().splitlines()[0])
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        if not f.init:
            continue
        tp, extra = _arg_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        default = (defaults or {}).get(f.name, default)
        if f.name == "env_kwargs":
            parser.add_argument("--kw", action="append", default=None, dest=f.name, metavar="KEY=VALUE",
                                help=f"env kwarg for every env (repeatable; values JSON-decoded when possible) (default: {default!r})")
            continue
        kwargs: dict[str, Any] = {"help": f"{f.metadata.get('help', '')} (default: {default!r})", "default": None, "dest": f.name}
        if tp is not None:
            kwargs["type"] = tp
        kwargs.update(extra)
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    return parser


def config_from_args(
    config_cls: type, argv: typing.Sequence[str] | None, *, defaults: dict[str, Any] | None = None, **parser_kwargs: Any
) -> Any:
    """Parse ``argv`` into ``config_cls``; options not given keep ``defaults``, then the dataclass defaults.

    A bad value exits with the config's own message (which names the field and the allowed values).
    """
    parser = config_parser(config_cls, defaults=defaults, **parser_kwargs)
    ns = parser.parse_args(argv)
    given = {**(defaults or {}), **{k: v for k, v in vars(ns).items() if v is not None}}
    try:
        if isinstance(given.get("env_kwargs"), list):
            import toolenv

            given["env_kwargs"] = toolenv.parse_kw(given["env_kwargs"])
        return config_cls(**given)
    except (ValueError, FileNotFoundError) as e:  # one line: the field, the value, the allowed values
        usage_error(parser, str(e))
