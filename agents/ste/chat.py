"""Chat models: one small interface for every model STE talks to.

Exploration, filtering, paraphrasing, judging and in-context evaluation all send lists of chat
conversations (``[{"role": ..., "content": ...}, ...]``) and get one reply per conversation::

    model = load_chat_model("smollm2-135m")                       # transformers, batched
    model = load_chat_model("PATH", backend="vllm")               # vLLM on a GPU
    model = load_chat_model("my-served-model", base_url="http://localhost:8000/v1")  # any OpenAI-compatible server
    replies = model.chat([[{"role": "user", "content": "Hi"}]], max_new_tokens=32, temperature=0.0)

``temperature=0`` is greedy decoding. A reply is cut before the first stop string (the stop
string itself is not part of it, as in the OpenAI API), whatever the backend.
:class:`ScriptedChatModel` answers with fixed replies, for tests.

**Prefill.** A conversation whose last message has role ``"assistant"`` is a prefix of the
reply that the model continues; ``chat`` returns only the continuation::

    model.chat([[{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "Final Answer:"}]])
    # -> [" 5"]: the reply is "Final Answer:" + " 5"

Local models render the earlier messages with the generation prompt and append the prefix's
tokens (never through the chat template, which would close the turn); an OpenAI-compatible
server is asked to continue the last message with vLLM's ``continue_final_message``.

Tool messages (``{"role": "tool", "content": output}``, as toolenv envs write them) are
rendered by the tokenizer's chat template for local models; an OpenAI-compatible server gets
them as user messages ``"Observation: <output>"``, since plain chat completions have no tool
turn without a tool-call id.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from agents.policy import Policy
    from agents.rollout import Generator

__all__ = [
    "ChatModel",
    "LocalChatModel",
    "OpenAIChatModel",
    "ScriptedChatModel",
    "VLLMChatModel",
    "cut_at_stop",
    "is_prefill",
    "load_chat_model",
]

logger = logging.getLogger(__name__)

Conversation = list[dict[str, str]]


@runtime_checkable
class ChatModel(Protocol):
    """Anything that answers a batch of chat conversations, one reply each.

    Attributes:
        name: What to record as the model that produced the replies.
    """

    name: str

    def chat(
        self,
        conversations: list[list[dict[str, str]]],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> list[str]:
        """One reply per conversation, in order; ``temperature=0`` is greedy; replies end before any stop string.

        A conversation whose last message is an ``"assistant"`` message is a prefill: the model
        continues that message, and the reply is the continuation alone (prefix + reply is the
        whole assistant turn). Stop strings are looked for in the continuation only.
        """
        ...


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest of the ``stop`` strings.

    >>> cut_at_stop("Action: f\\nObservation: 3", ["\\nObservation:"])
    'Action: f'
    >>> cut_at_stop("no stop here", ["Thought:"])
    'no stop here'
    """
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if 0 <= i < cut:
                cut = i
    return text[:cut]


def is_prefill(conversation: Sequence[dict[str, str]]) -> bool:
    """Whether ``conversation`` ends with an assistant message for the model to continue.

    >>> is_prefill([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hel"}])
    True
    >>> is_prefill([{"role": "user", "content": "hi"}])
    False
    """
    return bool(conversation) and conversation[-1].get("role") == "assistant"


def _check_request(max_new_tokens: int, temperature: float) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"Expected max_new_tokens >= 1, got {max_new_tokens}.")
    if temperature < 0:
        raise ValueError(f"Expected temperature >= 0 (0 is greedy), got {temperature}.")


# --------------------------------------------------------------------------- local models
class LocalChatModel:
    """A :class:`~agents.policy.Policy` answering chats in batches through its chat template.

    Conversations are rendered with :class:`agents.rollout.ChatFormat`, sorted by length and
    generated ``batch_size`` at a time by :class:`agents.rollout.HFGenerator` (or the
    ``generator`` given), so a batch of many short prompts costs about as much as its longest.
    A prefilled conversation (last message from the assistant) is the earlier messages with the
    generation prompt, then the prefix's tokens (:meth:`agents.rollout.ChatFormat.encode`, no
    special tokens); the reply is decoded after the prefix.

    Args:
        policy: The model and tokenizer.
        name: Recorded as the model's name (default: the policy's base model).
        batch_size: Conversations generated at once.
        top_p: Nucleus sampling mass when sampling.
        generator: The generation backend (default: ``HFGenerator(policy)``).
    """

    def __init__(
        self,
        policy: Policy,
        *,
        name: str | None = None,
        batch_size: int = 32,
        top_p: float = 1.0,
        generator: Generator | None = None,
    ) -> None:
        from agents.rollout import ChatFormat, HFGenerator

        if batch_size < 1:
            raise ValueError(f"Expected batch_size >= 1, got {batch_size}.")
        self.policy = policy
        self.name = name or policy.base_name or "local"
        self.batch_size = batch_size
        self.top_p = top_p
        self.format = ChatFormat(policy.tokenizer)
        self.generator: Generator = generator if generator is not None else HFGenerator(policy)

    def _prompt_ids(self, conversation: Conversation) -> tuple[list[int], list[int]]:
        """The prompt's tokens and, for a prefill, the prefix's tokens (their tail)."""
        if is_prefill(conversation):
            prefix = self.format.encode(conversation[-1]["content"])
            return self._template_ids(conversation[:-1]) + prefix, prefix
        return self._template_ids(conversation), []

    def _template_ids(self, conversation: Conversation) -> list[int]:
        messages = [{"role": m["role"], "content": m["content"]} for m in conversation]
        try:
            return self.format.prompt_ids(messages)
        except Exception:  # a template without a tool role (strict alternation): tool output as a user turn
            messages = [
                {"role": "user", "content": f"Observation: {m['content']}"} if m["role"] == "tool" else m for m in messages
            ]
            return self.format.prompt_ids(messages)

    def chat(
        self,
        conversations: list[list[dict[str, str]]],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> list[str]:
        from agents.rollout import GenerationSettings

        _check_request(max_new_tokens, temperature)
        if not conversations:
            return []
        greedy = temperature == 0
        settings = GenerationSettings(
            max_new_tokens=max_new_tokens, temperature=1.0 if greedy else temperature, top_p=self.top_p, greedy=greedy
        )
        encoded = [self._prompt_ids(c) for c in conversations]
        prompts = [ids for ids, _ in encoded]
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        replies: list[str] = [""] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            outputs = self.generator.generate([prompts[i] for i in chunk], settings, tuple(stop))
            for i, (ids, _) in zip(chunk, outputs):
                replies[i] = cut_at_stop(self._decode(ids, encoded[i][1]), stop)
        return replies

    def _decode(self, ids: list[int], prefix: list[int]) -> str:
        """The text of ``ids``; after a prefix, decoded in its context so a leading space survives
        tokenizers that drop it at the start of a sequence (SentencePiece)."""
        decode = self.policy.tokenizer.decode
        if prefix:
            head = decode(prefix, skip_special_tokens=True)
            whole = decode(prefix + list(ids), skip_special_tokens=True)
            if whole.startswith(head):
                return whole[len(head) :]
        return decode(ids, skip_special_tokens=True)


class VLLMChatModel(LocalChatModel):
    """A policy answering chats through vLLM (:class:`agents.rollout.VLLMGenerator`); needs a GPU.

    The policy can stay on the CPU: vLLM loads its base model and receives the policy's
    (adapter-merged) weights once.

    Args:
        policy: The model and tokenizer.
        name: Recorded as the model's name.
        gpu_memory_utilization: Share of GPU memory vLLM may take.
        **llm_kwargs: Passed on to ``vllm.LLM``.
    """

    def __init__(
        self, policy: Policy, *, name: str | None = None, gpu_memory_utilization: float = 0.8, **llm_kwargs: Any
    ) -> None:
        from agents.rollout import VLLMGenerator

        generator = VLLMGenerator(policy, gpu_memory_utilization=gpu_memory_utilization, **llm_kwargs)
        # vLLM batches and schedules by itself: hand it everything at once
        super().__init__(policy, name=name, batch_size=1 << 30, generator=generator)


# --------------------------------------------------------------------------- OpenAI-compatible servers
class _Retryable(Exception):
    """A failure worth another try: rate limit, server error, connection trouble."""


def content_text(content: Any) -> str:
    """A message ``content`` as text: a string as is, OpenAI's list of parts joined, ``None`` empty.

    >>> content_text([{"type": "text", "text": "4"}, {"type": "text", "text": "2"}]), content_text(5), content_text(None)
    ('42', '5', '')
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only within the same scheme, host and port (the Authorization header goes with it)."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        from urllib.parse import urljoin, urlsplit

        old, new = urlsplit(req.full_url), urlsplit(urljoin(req.full_url, newurl))
        if (old.scheme, old.hostname, old.port) != (new.scheme, new.hostname, new.port):
            return None  # urllib then raises the redirect as an HTTPError
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class OpenAIChatModel:
    """Any OpenAI-compatible chat endpoint (``POST {base_url}/chat/completions``) through ``urllib``.

    Conversations of a batch are sent concurrently. Rate limits (HTTP 429), server errors (5xx),
    timeouts and refused connections are retried with exponential backoff; other HTTP errors
    (a wrong model name, a bad key) fail at once with the server's message.

    A prefilled conversation (last message from the assistant) is sent as it is, with vLLM's
    ``"continue_final_message": true, "add_generation_prompt": false`` in the body (only then);
    the reply is the continuation. Servers other than vLLM may ignore these fields (and answer
    with a new turn) or refuse them: the OpenAI API itself has no prefill.

    Args:
        model: The served model's name, sent as ``"model"``.
        base_url: E.g. ``"http://localhost:8000/v1"`` (vLLM, llama.cpp, Ollama) or ``"https://api.openai.com/v1"``.
        api_key: Sent as a bearer token; default ``$OPENAI_API_KEY``; none is sent when neither is set.
        timeout: Seconds for one whole reply (connect, wait and read the body: a total deadline).
        max_retries: Further attempts after a retryable failure.
        backoff: Seconds before the first retry; doubled each time.
        concurrency: Requests in flight at once.
        name: Recorded as the model's name (default: ``model``).
        max_body_bytes: A reply larger than this is an error (16 MiB).

    Transport failures (refused or reset connections, a bad status line, a cut body, a reply that
    is not JSON) are retried; a redirect to another origin is refused, so the API key never
    leaves the endpoint's origin; a message ``content`` that is a list of parts is joined.
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 1.0,
        concurrency: int = 8,
        name: str | None = None,
        max_body_bytes: int = 16 * 2**20,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"Expected base_url to start with http:// or https://, got {base_url!r}.")
        if max_retries < 0 or concurrency < 1 or timeout <= 0 or backoff < 0:
            raise ValueError(
                f"Expected max_retries >= 0, concurrency >= 1, timeout > 0 and backoff >= 0, got "
                f"{max_retries}, {concurrency}, {timeout} and {backoff}."
            )
        self.model = model
        self.name = name or model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.concurrency = concurrency
        self.max_body_bytes = max_body_bytes
        self._opener = urllib.request.build_opener(_SameOriginRedirects())

    @staticmethod
    def _message(m: dict[str, str]) -> dict[str, str]:
        if m["role"] == "tool":
            return {"role": "user", "content": f"Observation: {m['content']}"}
        return {"role": m["role"], "content": m["content"]}

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
        deadline = time.monotonic() + self.timeout
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = self._read(response, deadline)
        except urllib.error.HTTPError as e:
            if 300 <= e.code < 400:
                raise RuntimeError(f"{self.url} redirected (HTTP {e.code}) to another origin "
                                   f"({e.headers.get('Location')!r}); not following it with the API key.") from None
            detail = e.read(2000).decode("utf-8", "replace")[:500]
            message = f"{self.url} answered HTTP {e.code}: {detail}"
            if e.code == 429 or e.code >= 500:
                raise _Retryable(message) from e
            raise RuntimeError(message) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:  # refused, reset, bad status, timeouts
            reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
            raise _Retryable(f"could not reach {self.url}: {reason}") from e
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise _Retryable(f"{self.url} answered with something that is not JSON ({type(e).__name__}): {raw[:200]!r}") from None
        return data if isinstance(data, dict) else {}

    def _read(self, response: Any, deadline: float) -> bytes:
        """The body, within the total deadline and the size cap (a server that trickles bytes cannot stretch either)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete reply within {self.timeout:g} s")
            sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
            if sock is not None:
                sock.settimeout(left)
            chunk = response.read1(65536) if hasattr(response, "read1") else response.read(65536)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_body_bytes:
                raise RuntimeError(f"{self.url} sent more than {self.max_body_bytes:,} bytes; giving up on this reply.")
            chunks.append(chunk)

    def _complete(self, conversation: Conversation, max_new_tokens: int, temperature: float, stop: Sequence[str]) -> str:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [self._message(m) for m in conversation],
            "max_tokens": max_new_tokens,
            "temperature": temperature,
        }
        if is_prefill(conversation):  # vLLM: continue the last message instead of opening a new turn
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        if stop:
            body["stop"] = list(stop)[:4]  # the OpenAI API takes at most 4; the rest are cut here
        for attempt in range(self.max_retries + 1):
            try:
                data = self._post(body)
                break
            except _Retryable as e:
                if attempt == self.max_retries:
                    raise RuntimeError(
                        f"{e} (gave up after {self.max_retries + 1} attempts; is the server running and the model served?)"
                    ) from None
                delay = self.backoff * 2**attempt
                logger.warning("%s; retrying in %.1f s", e, delay)
                time.sleep(delay)
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise RuntimeError(f"{self.url} answered without choices[0].message.content: {json.dumps(data)[:300]}") from None
        return cut_at_stop(content_text(content), stop)

    def chat(
        self,
        conversations: list[list[dict[str, str]]],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> list[str]:
        _check_request(max_new_tokens, temperature)
        if not conversations:
            return []
        if len(conversations) == 1 or self.concurrency == 1:
            return [self._complete(c, max_new_tokens, temperature, stop) for c in conversations]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(conversations))) as pool:
            return list(pool.map(lambda c: self._complete(c, max_new_tokens, temperature, stop), conversations))


# --------------------------------------------------------------------------- scripted (tests)
class ScriptedChatModel:
    """Fixed replies, for tests: a list consumed in order, or a function of the conversation.

    Every conversation it is sent is recorded (a copy) in :attr:`conversations`, and the keyword
    arguments of every ``chat`` call in :attr:`calls`. Replies are cut at stop strings like
    any model's. A function may raise, e.g. to simulate a crash in the middle of a run. A
    prefilled conversation (last message from the assistant) is passed as it is: the scripted
    reply is the continuation.

    Example:
        >>> m = ScriptedChatModel(["Yes.", "No"])
        >>> m.chat([[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]])
        ['Yes.', 'No']
        >>> m.conversations[1][0]["content"]
        'b'
    """

    def __init__(self, replies: Sequence[str] | Callable[[list[dict[str, str]]], str], *, name: str = "scripted") -> None:
        self.name = name
        self._fn = replies if callable(replies) else None
        self._replies = [] if callable(replies) else list(replies)
        self._next = 0
        self.conversations: list[list[dict[str, str]]] = []
        self.calls: list[dict[str, Any]] = []

    @property
    def remaining(self) -> int:
        """Fixed replies not used yet."""
        return len(self._replies) - self._next

    def chat(
        self,
        conversations: list[list[dict[str, str]]],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> list[str]:
        _check_request(max_new_tokens, temperature)
        self.calls.append({"n": len(conversations), "max_new_tokens": max_new_tokens, "temperature": temperature,
                           "stop": tuple(stop)})
        replies = []
        for conversation in conversations:
            seen = [dict(m) for m in conversation]
            self.conversations.append(seen)
            if self._fn is not None:
                reply = self._fn(seen)
            else:
                if self._next >= len(self._replies):
                    raise RuntimeError(
                        f"ScriptedChatModel ran out of replies: conversation {len(self.conversations)} needs one, "
                        f"it was given {len(self._replies)}."
                    )
                reply = self._replies[self._next]
                self._next += 1
            replies.append(cut_at_stop(reply, stop))
        return replies


# --------------------------------------------------------------------------- loading
def load_chat_model(
    spec: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    device: str = "auto",
    backend: str = "hf",
    dtype: str = "auto",
    batch_size: int = 32,
    timeout: float = 120.0,
    max_retries: int = 4,
) -> ChatModel:
    """The chat model named by ``spec``.

    Args:
        spec: With ``base_url``, the served model's name. Otherwise what
            :meth:`agents.policy.Policy.load` takes: ``smollm2-135m``, a local directory, a hub
            id, or a directory saved by an agent.
        base_url: An OpenAI-compatible endpoint (``.../v1``); the model is then remote.
        api_key: For the endpoint (default ``$OPENAI_API_KEY``).
        device: ``auto``, ``cpu`` or ``cuda`` for a local model.
        backend: ``hf`` (transformers) or ``vllm`` (a GPU) for a local model.
        dtype: ``auto``, ``float32`` or ``bfloat16`` for a local model.
        batch_size: Conversations generated at once by the ``hf`` backend.
        timeout: With ``base_url``, seconds for one whole reply.
        max_retries: With ``base_url``, further attempts after a retryable failure.
    """
    if base_url:
        return OpenAIChatModel(spec, base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)
    if backend not in ("hf", "vllm"):
        raise ValueError(f"Expected backend to be one of ['hf', 'vllm'], got {backend!r}.")
    from agents.policy import Policy

    if backend == "vllm":
        policy = Policy.load(spec, device="cpu", dtype="bfloat16" if dtype == "auto" else dtype, trainable=False)
        return VLLMChatModel(policy, name=spec)
    policy = Policy.load(spec, device=device, dtype=dtype, trainable=False)
    return LocalChatModel(policy, name=spec, batch_size=batch_size)
