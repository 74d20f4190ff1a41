"""TRICE's LAMA and MLQA tasks: loaders on small files in the public layouts, each tool backend, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest

import toolenv  # noqa: F401
from toolenv.datasets.qa import lama_passages, load_lama, load_mlqa

FACTS = [
    {"uuid": f"u{i}", "sub_label": sub, "obj_label": obj, "predicate_id": "P1376",
     "evidences": [{"masked_sentence": sentence, "obj_surface": obj, "sub_surface": sub}]}
    for i, (sub, obj, sentence) in enumerate([
        ("Damascus", "Syria", "The steel is named after Damascus, the capital city of [MASK]."),
        ("Oslo", "Norway", "Oslo is the capital and most populous city of [MASK]."),
        ("Lima", "Peru", "[MASK] has Lima as its capital."),
    ] * 4)
]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "lama" / "TREx").mkdir(parents=True)
    (tmp_path / "lama" / "TREx" / "P1376.jsonl").write_text("\n".join(json.dumps(f) for f in FACTS) + "\n")
    folder = tmp_path / "mlqa" / "MLQA_V1" / "test"
    folder.mkdir(parents=True)
    squad = {"version": "1.0", "data": [{"title": "Angelina Jolie", "paragraphs": [{
        "context": "Over the next decade, she went on more than 40 field missions.",
        "qas": [{"id": "q1", "question": "cô ấy đã thực hiện bao nhiêu nhiệm vụ?", "answers": [{"text": "more than 40", "answer_start": 31}]}]}]}]}
    (folder / "test-context-en-question-vi.json").write_text(json.dumps(squad, ensure_ascii=False))
    return tmp_path


def test_lama_questions_are_trices_cloze_and_split_by_uuid(data_dir: Path) -> None:
    train, test = load_lama("train", data_dir), load_lama("test", data_dir)
    assert len(train) + len(test) == len(FACTS) and not {t.id for t in train} & {t.id for t in test}
    by_answer = {t.answer: t.question for t in train + test}
    assert by_answer["Syria"] == "The steel is named after Damascus, the capital city of ?"
    assert by_answer["Peru"] == "? has Lima as its capital."
    assert ("Oslo", "Oslo is the capital and most populous city of Norway.") in lama_passages(data_dir)


def test_lama_env_with_the_retriever_and_a_callable(data_dir: Path) -> None:
    env = gym.make("toolenv/LAMA-v0", data_dir=str(data_dir))
    task_index = next(i for i, t in enumerate(env.unwrapped.tasks) if t.answer == "Norway")
    env.reset(options={"index": task_index})
    obs, *_ = env.step("QA(Oslo is the capital of which country?)")
    assert obs == "Oslo is the capital and most populous city of Norway."
    assert env.step("Norway")[4]["success"]
    asked: list[str] = []
    env = gym.make("toolenv/LAMA-v0", data_dir=str(data_dir), qa=lambda q: asked.append(q) or "Norway")
    env.reset(options={"index": task_index})
    assert env.step("QA(Which country?)")[0] == "Norway" and asked == ["Which country?"]
    assert env.step("QA()")[0].startswith("Error")  # a malformed call is an observation


def test_chat_and_seq2seq_backends_load_and_run(data_dir: Path, tmp_path: Path) -> None:
    """The loading code on tiny random models saved here: the tools run end to end (their output is noise)."""
    from transformers import BartConfig, BartForConditionalGeneration

    from tests.agents.conftest import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    chat_dir = tmp_path / "chat"
    tiny_model(len(tok)).save_pretrained(chat_dir)
    tok.save_pretrained(chat_dir)
    env = gym.make("toolenv/LAMA-v0", data_dir=str(data_dir), qa=f"chat:{chat_dir}")
    env.reset(options={"index": 0})
    obs, _, _, _, info = env.step("QA(What is the capital of Syria?)")
    assert info["calls_ok"] == [True] and isinstance(obs, str)

    mt_dir = tmp_path / "mt"
    eos = tok.convert_tokens_to_ids(tok.eos_token)
    config = BartConfig(vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                        encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=256, pad_token_id=eos, eos_token_id=eos,
                        bos_token_id=eos, decoder_start_token_id=eos, forced_eos_token_id=None)
    BartForConditionalGeneration(config).save_pretrained(mt_dir)
    tok.save_pretrained(mt_dir)
    env = gym.make("toolenv/MLQA-Test-v0", data_dir=str(data_dir), translator=f"seq2seq:{mt_dir}")
    env.reset(options={"index": 0})
    assert env.step("translator(cô ấy đã thực hiện bao nhiêu nhiệm vụ?)")[4]["calls_ok"] == [True]


def test_mlqa_env_reads_squad_layout(data_dir: Path) -> None:
    [task] = load_mlqa("test", data_dir)
    assert task.question.startswith("Context: Over the next decade") and task.question.endswith("Question: cô ấy đã thực hiện bao nhiêu nhiệm vụ?")
    env = gym.make("toolenv/MLQA-Test-v0", data_dir=str(data_dir), translator=lambda text: "how many missions did she do?")
    env.reset(options={"index": 0})
    assert env.step("translator(cô ấy đã thực hiện bao nhiêu nhiệm vụ?)")[0] == "how many missions did she do?"
    obs, reward, terminated, _, info = env.step("She went on more than 40 field missions.")
    assert terminated and info["success"] and reward == 1.0


def test_missing_settings_are_one_clear_error(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MLQA needs a translator"):
        gym.make("toolenv/MLQA-Test-v0", data_dir=str(data_dir))
    with pytest.raises(ValueError, match="translator to be 'seq2seq:MODEL', 'chat:MODEL'"):
        gym.make("toolenv/MLQA-Test-v0", data_dir=str(data_dir), translator="nllb")
    with pytest.raises(ValueError, match=r"Cannot load the model of translator='seq2seq:.*nope'"):
        gym.make("toolenv/MLQA-Test-v0", data_dir=str(data_dir), translator=f"seq2seq:{tmp_path / 'nope'}")
    with pytest.raises(ValueError, match="question_lang"):
        gym.make("toolenv/MLQA-Test-v0", data_dir=str(data_dir), translator=str, question_lang="fr")
    with pytest.raises(FileNotFoundError, match="MLQA_V1/dev/dev-context-en-question-vi.json"):
        gym.make("toolenv/MLQA-v0", data_dir=str(data_dir), translator=str)
    with pytest.raises(FileNotFoundError, match="lama/TREx"):
        gym.make("toolenv/LAMA-v0", data_dir=str(tmp_path / "empty"))
