"""TRICE's question-answering task: open-domain questions with a ``WikiSearch(query)`` retrieval tool."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from rewards.qa import contains_match, exact_match, token_f1
from toolenv.core import BASE_REWARD_WEIGHTS, ToolEnv
from toolenv.datasets.base import ListTaskSet, check_choice
from toolenv.datasets.qa import hotpotqa_passages, lama_passages, load_corpus, load_lama, load_mlqa, qa_tasks
from toolenv.protocols import Protocol
from toolenv.tools.base import Tool
from toolenv.tools.models import model_backend
from toolenv.tools.retrieval import bm25_retriever, wiki_search
from toolenv.types import Task

__all__ = ["LAMA_INSTRUCTION", "MLQA_INSTRUCTION", "QA_INSTRUCTION", "QA_REWARD_WEIGHTS", "LAMAEnv", "MLQAEnv", "QAEnv"]

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
        self._setup(tasks, dataset, split, tool, QA_INSTRUCTION, match, protocol=protocol, reward_weights=reward_weights,
                    answer_reward=answer_reward, tool_timeout=tool_timeout, max_output_chars=max_output_chars, render_mode=render_mode)

    def _setup(self, tasks: list[Task], dataset: str, split: str, tool: Tool, instruction: str, match: str, *,
               answer_reward: Callable[..., list[float]] | None, **kwargs: Any) -> None:
        """The ToolEnv of every TRICE text task: one tool, the instruction, TRICE's match unless ``answer_reward`` is given."""
        ToolEnv.__init__(self, ListTaskSet(tasks, name=dataset, split=split), [tool], instruction=instruction,
                         answer_reward=answer_reward or (contains_match if match == "contains" else exact_match), **kwargs)
        self.dataset, self.split, self.match = dataset, split, match

    def _score_answer(self, answer: str) -> dict[str, float]:
        assert self.task is not None
        aliases = [list(self.task.meta.get("aliases") or [self.task.answer])]
        correct = self.answer_reward([answer], answer=[self.task.answer], aliases=aliases, tool_value=[self._last_value])[0]
        return {"answer_correct": float(correct), "exact_match": exact_match([answer], aliases=aliases)[0],
                "answer_f1": token_f1([answer], aliases=aliases)[0]}

    def __repr__(self) -> str:
        return f"QAEnv(dataset={self.dataset!r}, split={self.split!r}, protocol={self.protocol.name!r})"


#: TRICE's instructions (``generate_data/utils/{lama,mlqa}.json``, as in its few-shot prompts).
LAMA_INSTRUCTION = "Given a question, answer it and you can use a QA model for help."
MLQA_INSTRUCTION = "Given a context, please answer the question in English and you can use a translator for help."


def _qa_tool(backend: Callable[[str], str], *, timeout: float, max_output_chars: int) -> Tool:
    def QA(question: str) -> str:  # noqa: N802  (TRICE's tool name)
        """Ask a question-answering model a factual question.

        Args:
            question: A complete question, e.g. What is the capital city of Syria?
        """
        question = str(question).strip()
        if not question:
            raise ValueError("Expected a question, e.g. QA(What is the capital city of Syria?).")
        return backend(question)

    return Tool(QA, timeout=timeout, max_output_chars=max_output_chars)


def _translator_tool(backend: Callable[[str], str], *, timeout: float, max_output_chars: int) -> Tool:
    def translator(text: str) -> str:
        """Translate text into English.

        Args:
            text: The text to translate, in any language.
        """
        text = str(text).strip()
        if not text:
            raise ValueError("Expected text to translate, e.g. translator(¿Dónde está?).")
        return backend(text)

    return Tool(translator, timeout=timeout, max_output_chars=max_output_chars)


class LAMAEnv(QAEnv):
    """TRICE's LAMA task: T-REx cloze facts with a ``QA(question)`` tool.

    The question is a Wikipedia sentence cut where the object was ("The steel is named after
    Damascus, the capital city of ?"); the model may ask ``QA(What is the capital city of Syria?)``
    and answers; right when the gold object occurs in the answer's first 20 words (TRICE's
    ``lama_evaluate``). ``qa=`` is the tool's backend: ``"retriever"`` (default: BM25 over the T-REx
    evidence sentences, or ``corpus=``, the best sentence returned — TRICE used Atlas over
    Wikipedia), ``"chat:MODEL"`` (a chat model answers, given the two best passages), or any
    callable ``f(question) -> str``. Data: ``lama/TREx/P*.jsonl`` (:func:`toolenv.datasets.qa.load_lama`).
    """

    def __init__(
        self,
        split: str = "train",
        *,
        qa: str | Callable[[str], str] = "retriever",
        corpus: str | os.PathLike[str] | None = None,
        match: str = "contains",
        data_dir: str | os.PathLike[str] | None = None,
        protocol: str | Protocol = "trice",
        reward_weights: Mapping[str, float] | None = None,
        answer_reward: Callable[..., list[float]] | None = None,
        tool_timeout: float = 30.0,
        max_output_chars: int = 2_000,
        render_mode: str | None = None,
    ) -> None:
        check_choice("match", match, ("contains", "exact"))
        tasks = load_lama(split, data_dir)
        if qa == "retriever" or (isinstance(qa, str) and qa.startswith("chat:")):
            retriever = bm25_retriever(load_corpus(corpus) if corpus is not None else lama_passages(data_dir))
        if qa == "retriever":
            def backend(question: str) -> str:
                hits = retriever.search(question, 1)
                return hits[0][1] if hits else "I do not know."
        elif isinstance(qa, str) and qa.startswith("chat:"):
            chat = model_backend(qa, setting="qa", instruction="Answer the question in a few words, using the passages.", allowed=("chat",))

            def backend(question: str) -> str:
                passages = "\n".join(f"{t}: {x}" for t, x, _ in retriever.search(question, 2))
                return chat(f"Passages:\n{passages}\nQuestion: {question}" if passages else f"Question: {question}")
        else:
            backend = model_backend(qa, setting="qa", instruction="", allowed=("chat",))
        tool = _qa_tool(backend, timeout=tool_timeout, max_output_chars=max_output_chars)
        self._setup(tasks, "lama", split, tool, LAMA_INSTRUCTION, match, protocol=protocol, reward_weights=reward_weights,
                    answer_reward=answer_reward, tool_timeout=tool_timeout, max_output_chars=max_output_chars, render_mode=render_mode)


class MLQAEnv(QAEnv):
    """TRICE's multilingual QA task: an English context, a question in another language, a ``translator(text)`` tool.

    The model may translate the question (``translator(cô ấy đã thực hiện bao nhiêu nhiệm vụ?)``) and
    answers in English; right when a gold answer occurs in its first 20 words. ``translator=`` is
    required: ``"seq2seq:MODEL"`` (a translation model, e.g. ``facebook/nllb-200-distilled-600M`` as
    TRICE used), ``"chat:MODEL"`` (a chat model asked to translate) or a callable ``f(text) -> str``.
    Data: ``mlqa/MLQA_V1/...`` (:func:`toolenv.datasets.qa.load_mlqa`); ``question_lang=`` one of
    :data:`toolenv.datasets.qa.MLQA_LANGUAGES` (default ``"vi"``, as TRICE's prompts).
    """

    def __init__(
        self,
        split: str = "train",
        *,
        translator: str | Callable[[str], str] | None = None,
        question_lang: str = "vi",
        match: str = "contains",
        data_dir: str | os.PathLike[str] | None = None,
        protocol: str | Protocol = "trice",
        reward_weights: Mapping[str, float] | None = None,
        answer_reward: Callable[..., list[float]] | None = None,
        tool_timeout: float = 30.0,
        max_output_chars: int = 2_000,
        render_mode: str | None = None,
    ) -> None:
        check_choice("match", match, ("contains", "exact"))
        tasks = load_mlqa(split, data_dir, question_lang=question_lang)
        if translator is None:
            raise ValueError("MLQA needs a translator: translator='seq2seq:facebook/nllb-200-distilled-600M' (a translation model), "
                             "'chat:MODEL' or a callable f(text) -> str.")
        backend = model_backend(translator, setting="translator", instruction="Translate into English; reply with the translation only:",
                                allowed=("seq2seq", "chat"))
        tool = _translator_tool(backend, timeout=tool_timeout, max_output_chars=max_output_chars)
        self._setup(tasks, "mlqa", split, tool, MLQA_INSTRUCTION, match, protocol=protocol, reward_weights=reward_weights,
                    answer_reward=answer_reward, tool_timeout=tool_timeout, max_output_chars=max_output_chars, render_mode=render_mode)
