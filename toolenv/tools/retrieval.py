"""``WikiSearch(query)``: TRICE's retrieval tool, backed by a local BM25 index over a passage corpus.

A corpus is a list of ``(title, text)`` passages; :func:`bm25_retriever` indexes it once per
process (envs built on the same corpus share the index) with ``bm25s`` (Lù 2024), English stop
words removed. :func:`wiki_search` makes the tool: the top ``k`` passages as ``title: text``
lines, best first (TRICE's evaluation asks its retriever for two). A query that matches nothing
says so; an empty query is an error the model sees.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

from toolenv.tools.base import Tool

__all__ = ["BM25Retriever", "bm25_retriever", "wiki_search"]


class BM25Retriever:
    """BM25 over ``passages`` (``(title, text)`` pairs); the title is indexed with the text."""

    def __init__(self, passages: Sequence[tuple[str, str]]) -> None:
        try:
            import bm25s
        except ImportError as e:  # pragma: no cover - bm25s is a dependency
            raise ImportError("WikiSearch needs the bm25s package: pip install bm25s") from e
        if not passages:
            raise ValueError("Expected a non-empty passage corpus for WikiSearch, got no passages.")
        self.passages = list(passages)
        self._bm25s = bm25s
        tokens = bm25s.tokenize([f"{t}. {x}" for t, x in self.passages], stopwords="en", show_progress=False)
        self._index = bm25s.BM25()
        self._index.index(tokens, show_progress=False)

    def search(self, query: str, k: int = 2) -> list[tuple[str, str, float]]:
        """The ``k`` best passages with a positive score, as ``(title, text, score)``."""
        tokens = self._bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not any(len(ids) for ids in tokens.ids):
            return []
        docs, scores = self._index.retrieve(tokens, k=min(k, len(self.passages)), show_progress=False)
        return [(*self.passages[int(d)], float(s)) for d, s in zip(docs[0], scores[0]) if s > 0]


@functools.lru_cache(maxsize=4)
def _cached(key: str, passages: tuple[tuple[str, str], ...]) -> BM25Retriever:
    return BM25Retriever(passages)


def bm25_retriever(passages: Sequence[tuple[str, str]]) -> BM25Retriever:
    """A :class:`BM25Retriever` shared by every caller with the same passages (indexed once per process)."""
    frozen = tuple((str(t), str(x)) for t, x in passages)
    key = hashlib.sha256("\n".join(f"{t}\t{x}" for t, x in frozen).encode()).hexdigest()
    return _cached(key, frozen)


def wiki_search(retriever: BM25Retriever, *, k: int = 2, max_chars_per_passage: int = 600, timeout: float = 5.0,
                max_output_chars: int = 2_000) -> Tool:
    """The ``WikiSearch`` tool over ``retriever``: top ``k`` passages, each cut to ``max_chars_per_passage``."""

    def WikiSearch(query: str) -> str:  # noqa: N802  (TRICE's tool name)
        """Search Wikipedia and return the most relevant passages.

        Args:
            query: What to look for, e.g. a name or a short question.
        """
        query = str(query).strip().strip("\"'")
        if not query:
            raise ValueError("Expected a non-empty query, e.g. WikiSearch(Eiffel Tower).")
        hits = retriever.search(query, k)
        if not hits:
            return f"No passage matches {query!r}."
        out = []
        for title, text, _ in hits:
            text = text if len(text) <= max_chars_per_passage else text[: max_chars_per_passage - 3] + "..."
            out.append(f"{title}: {text}")
        return "\n".join(out)

    return Tool(WikiSearch, timeout=timeout, max_output_chars=max_output_chars, concurrent=True)
