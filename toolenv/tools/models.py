"""Tools backed by a model: TRICE's ``QA(question)`` and ``translator(text)``.

A tool's backend is given as a string or a callable ``f(text) -> str``:

- ``"chat:MODEL"``: any chat model transformers can load (a local directory or a hub id), asked
  with a one-turn chat and decoded greedily; for ``QA`` the retrieved passages, when a corpus is
  given, go before the question.
- ``"seq2seq:MODEL"``: a translation model (``AutoModelForSeq2SeqLM``: NLLB, M2M100, Marian, T5),
  generating English (NLLB's ``eng_Latn`` / M2M's ``en`` forced as the first token when the
  tokenizer knows it), as TRICE's ``translator`` runs NLLB-200.
- ``"retriever"`` (``QA`` only): the best passage of the BM25 index is the answer (a retriever with
  an identity reader; the policy reads the passage).

Models load once per process and backend string. Nothing is downloaded at import; a model that
cannot be loaded is a clear error naming the setting and the value.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

__all__ = ["chat_backend", "model_backend", "seq2seq_backend"]

Backend = Callable[[str], str]


@functools.lru_cache(maxsize=4)
def _load_causal(name: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name)
    model = AutoModelForCausalLM.from_pretrained(name)
    model.eval()
    return model, tok


@functools.lru_cache(maxsize=4)
def _load_seq2seq(name: str) -> tuple[Any, Any]:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name)
    model = AutoModelForSeq2SeqLM.from_pretrained(name)
    model.eval()
    return model, tok


def _load(setting: str, loader: Callable[[str], tuple[Any, Any]], name: str, kind: str) -> tuple[Any, Any]:
    try:
        return loader(name)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"Cannot load the model of {setting}={kind + ':' + name!r}: {first[:300]}") from None


def chat_backend(name: str, *, instruction: str, setting: str, max_new_tokens: int = 48) -> Backend:
    """``f(text)``: the chat model ``name`` answers ``instruction`` + text, greedily."""
    model, tok = _load(setting, _load_causal, name, "chat")

    def run(text: str) -> str:
        import torch

        messages = [{"role": "user", "content": f"{instruction}\n{text}" if instruction else text}]
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
        else:
            ids = tok(messages[0]["content"], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        return str(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)).strip()

    return run


def seq2seq_backend(name: str, *, setting: str, max_new_tokens: int = 128) -> Backend:
    """``f(text)``: the translation model ``name`` turns ``text`` into English."""
    model, tok = _load(setting, _load_seq2seq, name, "seq2seq")
    forced = None
    for code in ("eng_Latn", "__en__", "en"):  # NLLB, M2M100's token, M2M100's code
        get = getattr(tok, "get_lang_id", None)
        try:
            tid = get(code) if callable(get) and code == "en" else tok.convert_tokens_to_ids(code)
        except (KeyError, ValueError):
            tid = None
        if isinstance(tid, int) and tid != tok.unk_token_id:
            forced = tid
            break

    def run(text: str) -> str:
        import torch

        enc = tok(text, return_tensors="pt", truncation=True)
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": False}
        if forced is not None:
            kwargs["forced_bos_token_id"] = forced
        with torch.no_grad():
            out = model.generate(**enc, **kwargs)
        return str(tok.decode(out[0], skip_special_tokens=True)).strip()

    return run


def model_backend(spec: str | Backend, *, setting: str, instruction: str, allowed: tuple[str, ...], max_new_tokens: int = 48) -> Backend:
    """A backend from a setting's value: a callable as is, ``"chat:MODEL"`` or ``"seq2seq:MODEL"`` loaded."""
    if callable(spec):
        return spec
    kind, sep, name = str(spec).partition(":")
    if not sep or kind not in allowed or not name:
        forms = ", ".join(f"'{k}:MODEL'" for k in allowed)
        raise ValueError(f"Expected {setting} to be {forms} (a local directory or a hub id) or a callable f(text) -> str, got {spec!r}.")
    if kind == "chat":
        return chat_backend(name, instruction=instruction, setting=setting, max_new_tokens=max_new_tokens)
    return seq2seq_backend(name, setting=setting)
