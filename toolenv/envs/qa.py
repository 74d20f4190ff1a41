"""TRICE's question-answering task: open-domain questions with a ``WikiSearch(query)`` retrieval tool."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import ClassVar

from rewards.qa import contains_match, exact_match, token_f1
from toolenv.core import BASE_REWARD_WEIGHTS, ToolEnv
from toolenv.datasets.base import ListTaskSet, check_choice
from toolenv.datasets.qa import hotpotqa_passages, load_corpus, qa_tasks
from toolenv.protocols import Protocol
from toolenv.tools.retrieval import bm25_retriever, wiki_search

__all__ = ["QA_INSTRUCTION", "QA_REWARD_WEIGHTS", "QAEnv"]

#: TRICE's instruction for the QA task (``generate_data/utils/qa.json``, as in its few-shot prompts).
QA_INSTRUCTION = "Given a question, answer it and you can use WikiSearch for help."

#: ``answer_correct`` is the match the env is built with (TRICE's by default); ``exact_match`` and
#: ``answer_f1`` are recorded on every answer with weight 0, for tables and for reweighting.
QA_REWARD_WEIGHTS: Mapping[str, float] = {**BASE_REWARD_WEIGHTS, "exact_match": 0.0, "answer_f1": 0.0}


class QAEnv(ToolEnv):
    """Open-domain question answering with a retriever, as in TRICE (Qiao et al., NAACL 2024).

    ## Description

    Each episode is one question from WebQuestions, NaturalQuestions (open), TriviaQA or
    HotpotQA. The model may call ``WikiSearch(query)`` — BM25 over a local passage corpus,
    returning the two best passages as ``title: text`` lines — and then answers in words. The
    answer is right (``match="contains"``, TRICE's evaluation) when a gold alias, lower-cased,
    occurs in the answer's first 20 words; ``match="exact"`` asks for SQuAD-normalised exact match
    instead. Exact match and token F1 are recorded as terms either way.

    The corpus is ``corpus=PATH`` (JSON Lines of ``{"title", "text"}``, e.g. a Wikipedia passage
    dump) or, by default, the 992 HotpotQA distractor paragraphs in the data directory, which hold
    the answers to HotpotQA's 100 distractor questions and work offline; other datasets need a
    real corpus to be answerable with the tool. The index is built once per process and corpus.

    ## Action Space

    ``ToolAction(16384)`` in the env's protocol; with ``"trice"`` (default) ``WikiSearch(Eiffel
    Tower)`` alone is a call and anything else an answer. A malformed action is an observation
    and a ``format_error`` term, never an exception.

    ## Observation Space

    ``AnyText(16384)``: the system prompt and question after ``reset``, the retrieved passages
    after a call, ``""`` after the answer.

    ## Rewards

    ``answer_correct`` 1.0, ``format_error`` −0.1, and, with weight 0, ``exact_match``,
    ``answer_f1``, ``call_wellformed``, ``call_succeeded``, ``step_cost``.

    ## Episode End

    Terminates when the model answers; truncates after ``max_episode_steps`` (4).

    ## Arguments

    - ``dataset``: ``"webquestions"``, ``"nq"``, ``"triviaqa"`` or ``"hotpotqa"``; ``split`` as
      :data:`toolenv.datasets.qa.QA_SPLITS` lists.
    - ``corpus``: a JSON Lines passage file; ``None`` uses the HotpotQA paragraphs.
    - ``top_k``: passages per search (TRICE: 2). ``match``: ``"contains"`` or ``"exact"``.
    - ``data_dir`` and the :class:`~toolenv.core.ToolEnv` arguments.

    ## Registered Configurations

    ``toolenv/WebQuestions-v0``, ``toolenv/NQ-v0``, ``toolenv/TriviaQA-v0``, ``toolenv/HotpotQA-v0``
    (train splits) and a ``-Test-v0`` id for each.
    """

    reward_weights_defaults: ClassVar[Mapping[str, float]] = QA_REWARD_WEIGHTS
    #: The retriever is read-only: snapshots share the tools instead of copying the index.
    snapshot_shared: ClassVar[frozenset[str]] = ToolEnv.snapshot_shared | {"tools", "_tool_names", "system_prompt"}

    def __init__(
        self,
        dataset: str = "hotpotqa",
        split: str = "train",
        *,
        corpus: str | os.PathLike[str] | None = None,
        top_k: int = 2,
        match: str = "contains",
        data_dir: str | os.PathLike[str] | None = None,
        protocol: str | Protocol = "trice",
        reward_weights: Mapping[str, float] | None = None,
        answer_reward: Callable[..., list[float]] | None = None,
        tool_timeout: float = 5.0,
        max_output_chars: int = 2_000,
        render_mode: str | None = None,
    ) -> None:
        check_choice("match", match, ("contains", "exact"))
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"Expected top_k to be an integer >= 1, got {top_k!r}.")
        tasks = qa_tasks(dataset, split, data_dir)
        passages = load_corpus(corpus) if corpus is not None else hotpotqa_passages(data_dir)
        tool = wiki_search(bm25_retriever(passages), k=top_k, timeout=tool_timeout, max_output_chars=max_output_chars)
        super().__init__(
            ListTaskSet(tasks, name=dataset, split=split),
            [tool],
            protocol=protocol,
            instruction=QA_INSTRUCTION,
            reward_weights=reward_weights,
            answer_reward=answer_reward or (contains_match if match == "contains" else exact_match),
            tool_timeout=tool_timeout,
            max_output_chars=max_output_chars,
            render_mode=render_mode,
        )
        self.dataset, self.split, self.match = dataset, split, match

    def _score_answer(self, answer: str) -> dict[str, float]:
        assert self.task is not None
        aliases = [list(self.task.meta.get("aliases") or [self.task.answer])]
        correct = self.answer_reward([answer], answer=[self.task.answer], aliases=aliases, tool_value=[self._last_value])[0]
        return {"answer_correct": float(correct), "exact_match": exact_match([answer], aliases=aliases)[0],
                "answer_f1": token_f1([answer], aliases=aliases)[0]}

    def __repr__(self) -> str:
        return f"QAEnv(dataset={self.dataset!r}, split={self.split!r}, protocol={self.protocol.name!r})"
