"""TRICE's QA task: loaders on small files in each public layout, the scores against SQuAD's and TRICE's rules, the env end to end."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest

import toolenv  # noqa: F401
from rewards.qa import contains_match, exact_match, normalize_answer, token_f1
from toolenv.datasets.qa import hotpotqa_passages, load_corpus, qa_tasks, trice_fewshot
from toolenv.envs.qa import QAEnv

HOTPOT = [
    {"question": "Which city is the Eiffel Tower in?", "answer": "Paris", "type": "bridge", "level": "hard",
     "supporting_facts": {"title": ["Eiffel Tower", "Eiffel Tower"], "sent_id": [0, 1]},
     "context": {"title": ["Eiffel Tower", "Berlin"],
                 "sentences": [["The Eiffel Tower is a lattice tower in Paris.", " It was built in 1889."],
                               ["Berlin is the capital of Germany."]]}},
]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """One small file in each dataset's public layout."""
    (tmp_path / "webquestions").mkdir()
    (tmp_path / "webquestions" / "test.json").write_text(json.dumps(
        [{"qId": "wqs000000", "answers": ["Jamaican English", "Jamaican Creole"], "qText": "what does jamaican people speak?"}]))
    (tmp_path / "nq_open").mkdir()
    (tmp_path / "nq_open" / "NQ-open.dev.jsonl").write_text(
        json.dumps({"question": "who wrote hamlet", "answer": ["William Shakespeare", "Shakespeare"]}) + "\n")
    (tmp_path / "triviaqa" / "triviaqa-unfiltered").mkdir(parents=True)
    (tmp_path / "triviaqa" / "triviaqa-unfiltered" / "unfiltered-web-dev.json").write_text(json.dumps({"Data": [
        {"QuestionId": "tc_1", "Question": "Which planet is the Red Planet?",
         "Answer": {"Value": "Mars", "Aliases": ["Mars", "Planet Mars"], "NormalizedAliases": ["mars"]}}]}))
    (tmp_path / "hotpotqa").mkdir()
    items = [dict(h, question=f"{h['question']} ({i})") for i, h in enumerate(HOTPOT * 100)]
    (tmp_path / "hotpotqa" / "hotpot_dev_distractor_first100.json").write_text(json.dumps(items))
    return tmp_path


def test_scores_follow_squad_and_trice() -> None:
    # SQuAD's normalisation and F1 (evaluate-v1.1.py): articles, punctuation, case, whitespace
    assert normalize_answer("  The Eiffel-Tower, a  tower!") == "eiffeltower tower"
    assert exact_match(["an apple"], aliases=[["Apple"]]) == [1.0]
    # prediction "eiffel tower paris" vs gold "eiffel tower": 2 common, precision 2/3, recall 1
    assert token_f1(["The Eiffel Tower, Paris"], aliases=[["Eiffel Tower"]]) == [pytest.approx(2 * (2 / 3) / (2 / 3 + 1))]
    assert token_f1(["Berlin"], aliases=[["Paris", "Berlin"]]) == [1.0]  # the best alias counts
    # TRICE's qa_evaluate: an alias, lower-cased, inside the first 20 words
    assert contains_match(["I think it is Planet Mars."], aliases=[["planet mars"]]) == [1.0]
    assert contains_match([" ".join(["word"] * 20 + ["Mars"])], aliases=[["Mars"]]) == [0.0]
    with pytest.raises(ValueError, match="aliases"):
        exact_match(["a", "b"], aliases=[["a"]])


def test_loaders_read_each_public_layout(data_dir: Path) -> None:
    [wq] = qa_tasks("webquestions", "test", data_dir)
    assert wq.answer == "Jamaican English" and wq.meta["aliases"] == ["Jamaican English", "Jamaican Creole"]
    [nq] = qa_tasks("nq", "test", data_dir)
    assert nq.question == "who wrote hamlet" and nq.meta["aliases"][1] == "Shakespeare"
    [tq] = qa_tasks("triviaqa", "test", data_dir)
    assert tq.id == "triviaqa-tc_1" and tq.meta["aliases"] == ["Mars", "Planet Mars"]
    train, test = qa_tasks("hotpotqa", "train", data_dir), qa_tasks("hotpotqa", "test", data_dir)
    assert (len(train), len(test)) == (80, 20)
    assert [c.arguments for c in train[0].solution] == [{"query": "Eiffel Tower"}]  # one search per distinct supporting title
    assert hotpotqa_passages(data_dir) == [("Eiffel Tower", "The Eiffel Tower is a lattice tower in Paris. It was built in 1889."),
                                           ("Berlin", "Berlin is the capital of Germany.")]


def test_missing_or_bad_data_is_one_clear_error(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="NQ-open.train.jsonl"):
        qa_tasks("nq", "train", data_dir)
    with pytest.raises(ValueError, match="Did you mean 'triviaqa'"):
        qa_tasks("trivia", "test", data_dir)
    with pytest.raises(FileNotFoundError, match="corpus"):
        QAEnv("nq", "test", data_dir=data_dir, corpus=str(tmp_path / "nope.jsonl"))
    with pytest.raises(ValueError, match="match"):
        QAEnv("nq", "test", data_dir=data_dir, match="fuzzy")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"title": "x"}) + "\n")
    with pytest.raises(ValueError, match="line 1: missing key 'text'"):
        load_corpus(bad)


def test_gold_episode_searches_then_answers(data_dir: Path) -> None:
    env = gym.make("toolenv/HotpotQA-Test-v0", data_dir=str(data_dir))
    env.reset(options={"index": 0})
    obs, *_ = env.step("WikiSearch(Eiffel Tower)")
    assert obs.startswith("Eiffel Tower: The Eiffel Tower is a lattice tower in Paris.")
    obs, reward, terminated, _, info = env.step("It is in Paris, France.")
    assert terminated and info["success"] and reward == 1.0
    assert info["reward_raw"]["exact_match"] == 0.0 and 0 < info["reward_raw"]["answer_f1"] < 1
    # exact match as the check, and a user corpus
    corpus = data_dir / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"title": t, "text": x}) for t, x in [("Mars", "Mars is the Red Planet."), ("Venus", "Venus is hot.")]))
    env = gym.make("toolenv/TriviaQA-Test-v0", data_dir=str(data_dir), corpus=str(corpus), match="exact", top_k=1)
    env.reset(options={"index": 0})
    assert env.step("WikiSearch(red planet)")[0] == "Mars: Mars is the Red Planet."
    assert env.step("WikiSearch()")[0].startswith("Error")  # a malformed call is an observation
    assert env.step("Planet Mars")[4]["success"]


def test_gold_demonstrations_feed_behaviour_cloning(data_dir: Path) -> None:
    from agents import bc
    from tests.agents.conftest import tiny_tokenizer

    cfg = bc.Config(model="smollm2-135m", env=["toolenv/HotpotQA-v0"], env_kwargs={"data_dir": str(data_dir)}, demos_per_env=5)
    demos = bc.demonstrations(cfg, tiny_tokenizer())
    assert len(demos) == 5 and all(d.success for d in demos)
    assert demos[0].actions == ["WikiSearch(Eiffel Tower)", "Paris"]


def test_shared_hotpotqa_gold_solves_every_question() -> None:
    """On the real distractor file, each question's gold searches and answer succeed over the default corpus."""
    env = QAEnv("hotpotqa", "test") if _has_data() else pytest.skip("no TOOLENV_DATA")
    solved = 0
    for i in range(len(env.tasks)):
        env.reset(options={"index": i})
        for action in env.gold_actions():
            *_, info = env.step(action)
        solved += info["success"]
    assert solved == len(env.tasks)


def test_trice_fewshot_prompts_load() -> None:
    if not _has_data():
        pytest.skip("no TOOLENV_DATA")
    shots = trice_fewshot(task="qa")
    assert shots and shots[0]["output"].startswith("WikiSearch(")


def _has_data() -> bool:
    import os

    return bool(os.environ.get("TOOLENV_DATA")) and Path(os.environ["TOOLENV_DATA"], "hotpotqa").is_dir()


def test_rrhf_scores_qa_candidates_with_trices_text_ladder(data_dir: Path) -> None:
    """Candidates played in the env, scored as TRICE's score.py scores a QA group: right 20 (15 with other tool use), wrong next rung, none 0."""
    from agents.rollout import scripted_trajectory
    from agents.rrhf import candidate_scores
    from tests.agents.conftest import tiny_tokenizer

    tok = tiny_tokenizer()
    env = gym.make("toolenv/HotpotQA-v0", data_dir=str(data_dir))
    play = [["WikiSearch(Eiffel Tower)", "Paris"], ["It is in Paris."], ["WikiSearch(Eiffel Tower)", "Lyon"],
            ["WikiSearch(Eiffel Tower)"] * 4]  # the last never answers (cut at the step limit)
    trajs = [scripted_trajectory(env, actions, tok, options={"index": 0}) for actions in play]
    assert trajs[3].truncated
    assert candidate_scores(trajs, trajs[0].task) == [20.0, 15.0, 10.0, 0.0]
