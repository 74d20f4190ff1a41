"""STE exploration: imagine a query, try it against the real API, reflect, remember — for every API at once.

For each API of the pool, ``num_episodes`` episodes of up to ``num_stm_slots`` trials. A trial:

1. **imagine**: the explorer reads the API's documentation and the long-term memory of every
   earlier trial on that API (``"query | solved yes/no"``, one line each) and — after the first
   trial of an episode — the episode's short-term memory (query, final answer, verdict of its
   earlier trials), and writes a new user query (:func:`agents.ste.prompts.imagine_messages`);
2. **try**: the query is played in ``toolenv/Explore-v0`` with the ReAct protocol: up to
   ``max_turn`` actions (tool calls, or malformed actions that get an error back) and then a
   final answer; an action that is still not a final answer after that is recorded but not run
   (the trial is ``"truncated"``);
3. **reflect**: asked whether it fulfilled the query, the explorer answers Yes or No
   (:func:`agents.ste.prompts.parse_reflection`; ``None`` when the reply says neither).

**Guided mode** (``guided=True``, ``--guided``; off by default, which is STE's method): for small
explorers that never write a well-formed ReAct action on their own. A trial explores one known
API, so the try step's replies are prefilled (:mod:`agents.ste.chat`'s prefill) with the ReAct
scaffolding and the model writes only the parts that carry information. The policy:

* the first turn, and any turn after a call that failed or an action that did not parse, is a
  call of the explored API: the reply starts ``Thought: I should call {api}.\\nAction:
  {api}\\nAction Input: {``; then each required parameter in turn is prefilled (``"city": "``)
  and the model writes its value, cut at the closing quote (strings) or at ``,``/``}``
  (numbers, booleans); the object is closed after the last one. An API whose required
  parameters are not all scalars, or that has none, gets the ``{`` alone and the model writes
  the object, cut where it closes (:func:`agents.ste.prompts.close_json`);
* the turn after a successful call, and the turn after the last allowed call (``max_turn``), is
  the final answer: the reply starts ``Thought: I now know the final answer.\\nFinal Answer:``.

So a guided trial is one call (retried on errors, up to ``max_turn``) and an answer — the
single-call queries STE starts every exploration with. The recorded step ``text`` is what the
env parsed: the prefixes with the model's continuations. The query is imagined from a short
prompt with one demonstration and an example call built from the schema
(:func:`agents.ste.prompts.guided_imagine_messages`; same memories; a copy of the demonstration's
question counts as no query); the reflection is unchanged. Sampling still uses ``temperature``: a small
explorer writes far more usable values below the default 1.0.

The same (episode, trial, turn) of every API runs in one batched ``chat`` call (lockstep), so a
local model generates for all APIs at once. Every trial is appended to the output JSONL as soon
as it finishes; a restarted run reads the file, skips the (api, episode, trial) keys it holds,
rebuilds the memories from it and goes on where it stopped.

One JSON object per line::

    {"api": "get_city", "source": "apichain", "episode": 0, "trial": 1, "query": "...",
     "steps": [{"kind": "call", "text": "<raw model action>", "thought": "...",
                "call": {"name": "get_city", "arguments": {"city": "Paris"}},
                "observation": "<the tool's real output>", "ok": true},
               {"kind": "answer", "text": "Thought: ...\\nFinal Answer: ...", "thought": "...",
                "call": null, "observation": null, "ok": null}],
     "final_answer": "..." | null, "reflection": "yes" | "no" | null, "reflection_text": "Yes.",
     "ltm": ["query | solved yes", ...], "stm": [{"query": "...", "final_answer": "...", "reflection": "yes"}],
     "truncated": false, "guided": false, "explorer": "smollm2-135m", "time": 1234567890.0}

Step kinds: ``"call"`` (run; ``observation`` is the tool's output or error, ``ok`` whether
every call succeeded), ``"invalid"`` (no call parsed; ``observation`` is the env's error
message, ``ok`` false), ``"answer"`` (the final answer; nothing run). The step cut by
``max_turn`` keeps its parsed kind and ``call`` with ``observation`` and ``ok`` null. ``ltm``
and ``stm`` are the memories the imagine prompt showed. A trial whose imagined query is empty
has no steps and no reflection.

Run::

    toolenv ste explore --apis apichain:get_city calculator --model smollm2-135m --out ste/trials.jsonl
    toolenv ste explore --apis bfcl:GorillaFileSystem --model my-served-model --base-url http://localhost:8000/v1

From Python: ``explore(ExploreConfig(apis=["calculator"], out="trials.jsonl"), model=my_chat_model)``.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

import toolenv  # noqa: F401  (registers the env ids)
from agents.config import check_in, check_positive, config_from_args
from agents.ste.chat import ChatModel, load_chat_model
from agents.ste.prompts import (
    GUIDED_ANSWER,
    GUIDED_DEMO_QUERY,
    QUERY_STOP,
    REFLECTION_PROMPT,
    clean_query,
    close_json,
    guided_call_prefill,
    guided_imagine_messages,
    guided_parameters,
    imagine_messages,
    ltm_line,
    parse_reflection,
)
from toolenv.tools.pool import Api, api_pool

__all__ = ["EXPLORE_ENV_ID", "ExploreConfig", "api_targets", "explore", "load_trials", "main", "split_list_args"]

logger = logging.getLogger(__name__)

EXPLORE_ENV_ID = "toolenv/Explore-v0"


@dataclass
class ExploreConfig:
    """STE exploration: imagined queries tried against real APIs, with long- and short-term memory."""

    apis: list[str] = field(default_factory=lambda: ["calculator"], metadata={"help": "pool specs of the APIs to explore, several after one --apis: apichain, apichain:get_city, calculator, bfcl, bfcl:GorillaFileSystem, bfcl:GorillaFileSystem.ls, pkg.module:function, file.py:function"})
    model: str = field(default="smollm2-135m", metadata={"help": "explorer: shipped name, local directory, hub id, saved agent output, or with --base-url the served model's name"})
    out: str = field(default="ste/trials.jsonl", metadata={"help": "trials JSONL (appended to; an existing file is resumed)"})
    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible endpoint (.../v1) serving the explorer"})
    api_key: str | None = field(default=None, metadata={"help": "key for --base-url (default: $OPENAI_API_KEY)"})
    timeout: float = field(default=120.0, metadata={"help": "with --base-url: seconds for one whole reply"})
    retries: int = field(default=4, metadata={"help": "with --base-url: further attempts after a failed request"})
    backend: str = field(default="hf", metadata={"help": "local generation backend: hf (transformers) or vllm (GPU)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda (local models)"})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 on CUDA, fp32 on CPU), float32 or bfloat16 (local models)"})
    batch_size: int = field(default=32, metadata={"help": "conversations generated at once by the hf backend"})
    num_episodes: int = field(default=15, metadata={"help": "episodes per API"})
    num_stm_slots: int = field(default=4, metadata={"help": "trials per episode (they share short-term memory)"})
    max_turn: int = field(default=4, metadata={"help": "actions (tool calls or malformed actions) per trial before the final answer"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of queries and actions (0: greedy); reflection is greedy"})
    query_max_tokens: int = field(default=96, metadata={"help": "tokens of an imagined query at most"})
    action_max_tokens: int = field(default=192, metadata={"help": "tokens of one action at most"})
    reflection_max_tokens: int = field(default=16, metadata={"help": "tokens of a reflection at most"})
    guided: bool = field(default=False, metadata={"help": "for small explorers: prefill the explorer's actions with the ReAct scaffolding (call the explored API with its parameter names, then answer) so it writes only argument values and the answer, and imagine queries from a short prompt with one demonstration; such a model also does better with --temperature 0.7 (off: STE's method)"})
    seed: int = field(default=0, metadata={"help": "random seed (local models)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        if isinstance(self.apis, str):
            self.apis = [self.apis]
        if not self.apis:
            raise ValueError("Expected at least one pool spec in apis, got [].")
        for name in ("batch_size", "num_episodes", "num_stm_slots", "max_turn", "query_max_tokens",
                     "action_max_tokens", "reflection_max_tokens"):
            check_positive(name, getattr(self, name))
        check_positive("temperature", self.temperature, allow_zero=True)
        check_positive("timeout", self.timeout)
        check_positive("retries", self.retries, allow_zero=True)
        check_in("backend", self.backend, {"hf", "vllm"})
        check_in("device", self.device.split(":")[0], {"auto", "cpu", "cuda"})
        check_in("dtype", self.dtype, {"auto", "float32", "fp32", "bfloat16", "bf16"})
        api_targets(self.apis)  # unknown specs fail here, with a "Did you mean"


def _single_spec(spec: Any, api: Api) -> str:
    """A spec naming only ``api``, for a group spec (``"apichain"``, ``"bfcl:Class"``, ``"mod:*"``)."""
    if api.source in ("apichain", "calculator"):
        return api.name if api.source == "calculator" else f"apichain:{api.name}"
    if api.bfcl_class is not None:
        return f"bfcl:{api.bfcl_class}.{api.name}"
    if isinstance(spec, str) and spec.endswith(":*"):
        return spec[:-1] + api.name
    raise ValueError(f"Cannot name API {api.name!r} of pool spec {spec!r} on its own.")


def api_targets(specs: Sequence[Any]) -> list[tuple[Api, Any]]:
    """Each API of the pool with a spec that makes an Explore env offering that API alone.

    >>> [(a.name, s) for a, s in api_targets(["apichain:get_city", "calculator"])]
    [('get_city', 'apichain:get_city'), ('calculator', 'calculator')]
    """
    api_pool(list(specs))  # unknown specs and clashing names fail as the pool says
    out: dict[str, tuple[Api, Any]] = {}
    for spec in specs:
        apis = api_pool([spec])
        for api in apis:
            out.setdefault(api.name, (api, spec if len(apis) == 1 else _single_spec(spec, api)))
    return list(out.values())


# ---------------------------------------------------------------------------------- trials file
def load_trials(path: str | Path) -> list[dict[str, Any]]:
    """The trials of a JSONL file written by :func:`explore` (``[]`` when it does not exist).

    A last line cut short by a crash is dropped from the file; a bad line elsewhere is an error.
    """
    p = Path(path)
    if not p.exists():
        return []
    raw = p.read_bytes()
    lines = raw.split(b"\n")
    trials: list[dict[str, Any]] = []
    offset = 0
    for number, line in enumerate(lines, 1):
        end = offset + len(line) + 1
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError:
                if any(rest.strip() for rest in lines[number:]):
                    raise ValueError(f"Expected one JSON object per line in {p}, got a bad line {number}.") from None
                logger.warning("%s: dropping an unfinished last line (%d bytes)", p, len(line))
                with p.open("r+b") as f:
                    f.truncate(offset)
                break
            if not isinstance(record, dict) or not isinstance(record.get("api"), str):
                got = "an object without 'api'" if isinstance(record, dict) else type(record).__name__
                raise ValueError(f"Expected a trial (a JSON object with an 'api' name) on line {number} of {p}, got {got}.")
            trials.append(record)
        offset = end
    else:
        if raw and not raw.endswith(b"\n"):  # a whole last record without its newline: end the line
            with p.open("ab") as f:  # before the next trial is appended onto it
                f.write(b"\n")
    return trials


def _json_line(record: dict[str, Any]) -> str:
    """One JSONL line; text a model wrote with lone surrogates is escaped, so it still round-trips."""
    line = json.dumps(record, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(record)
    return line + "\n"


def _key(trial: dict[str, Any]) -> tuple[str, int, int]:
    return (str(trial["api"]), int(trial["episode"]), int(trial["trial"]))


def _memories(earlier: Sequence[dict[str, Any]], episode: int, slots: int) -> tuple[list[str], list[dict[str, Any]]]:
    """Long-term memory (every earlier trial with a query) and the episode's short-term memory."""
    ordered = sorted(earlier, key=lambda t: (t["episode"], t["trial"]))
    ltm = [ltm_line(t["query"], t.get("reflection")) for t in ordered if t.get("query")]
    stm = [{"query": t["query"], "final_answer": t.get("final_answer"), "reflection": t.get("reflection")}
           for t in ordered if t["episode"] == episode and t.get("query")]
    return ltm, stm[-slots:]


# ---------------------------------------------------------------------------------- one attempt
class _Attempt:
    """One API's trial in flight: its env episode and the steps so far."""

    def __init__(self, env: gym.Env, query: str, api: Api) -> None:
        self.env = env
        self.api = api
        self.base: Any = env.unwrapped
        self.query = query
        self.steps: list[dict[str, Any]] = []
        self.final_answer: str | None = None
        self.truncated = False
        self.extra: list[dict[str, str]] = []  # the cut action, which the env never saw
        self.done = not query
        if query:
            env.reset(options={"query": query})

    def conversation(self) -> list[dict[str, str]]:
        return [{"role": m["role"], "content": m["content"]} for m in self.base.messages] + self.extra

    def answers_next(self, *, last: bool) -> bool:
        """Guided mode: the next reply is the final answer (after a successful call, or at the turn limit)."""
        return last or bool(self.steps and self.steps[-1]["ok"] is True)

    def _thought(self, text: str) -> tuple[str | None, Any]:
        try:
            parsed = self.base.protocol.parse(text, self.base.tools)
        except Exception:  # protocols must not raise; if one does, the env reports it anyway
            return None, None
        return parsed.thought, parsed

    def act(self, text: str, *, last: bool) -> None:
        thought, parsed = self._thought(text)
        if last and (parsed is None or parsed.kind != "answer"):
            kind = parsed.kind if parsed is not None else "invalid"
            call = parsed.calls[0].to_dict() if parsed is not None and parsed.calls else None
            self.steps.append({"kind": kind, "text": text, "thought": thought, "call": call, "observation": None, "ok": None})
            self.extra.append({"role": "assistant", "content": text})
            self.truncated = self.done = True
            return
        obs, _, terminated, truncated, info = self.env.step(text)
        kind = info.get("action_kind", "invalid")
        step: dict[str, Any] = {"kind": kind, "text": text, "thought": thought, "call": None, "observation": None, "ok": None}
        if kind == "call":
            calls = info.get("calls") or []
            step["call"] = calls[0] if calls else None
            step["observation"] = "\n".join(str(o) for o in info.get("tool_outputs", []))
            oks = info.get("calls_ok") or []
            step["ok"] = bool(oks) and all(oks)
        elif kind == "answer":
            self.final_answer = info.get("answer", "")
        else:
            step["observation"] = obs
            step["ok"] = False
        self.steps.append(step)
        if truncated and not terminated:
            self.truncated = True
        self.done = bool(terminated or truncated)


def _seed(seed: int, episode: int, trial: int) -> None:
    value = (seed * 1_000_003 + episode * 1_009 + trial) % (2**31)
    random.seed(value)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(value)


def _continue(model: ChatModel, cfg: ExploreConfig, attempts: Sequence[_Attempt], prefixes: Sequence[str],
              stop: Sequence[str]) -> list[str]:
    """The model's continuation of each attempt's reply so far (a prefill)."""
    conversations = [a.conversation() + [{"role": "assistant", "content": p}] for a, p in zip(attempts, prefixes)]
    return model.chat(conversations, max_new_tokens=cfg.action_max_tokens, temperature=cfg.temperature, stop=stop)


def _guided_actions(model: ChatModel, cfg: ExploreConfig, active: Sequence[_Attempt], *, last: bool) -> list[str]:
    """Guided mode's actions for one turn (see the module doc), one batched ``chat`` call per kind of continuation."""
    texts = [GUIDED_ANSWER if a.answers_next(last=last) else guided_call_prefill(a.api.name) for a in active]
    params = [None if t == GUIDED_ANSWER else guided_parameters(a.api.doc) for a, t in zip(active, texts)]
    # 1. final answers, and calls whose arguments the model writes as one object (cut where it closes)
    group = [i for i, (t, p) in enumerate(zip(texts, params)) if t == GUIDED_ANSWER or not p]
    if group:
        replies = _continue(model, cfg, [active[i] for i in group], [texts[i] for i in group],
                            tuple(active[0].base.protocol.stop))
        for i, reply in zip(group, replies):
            texts[i] += reply if texts[i] == GUIDED_ANSWER else close_json(reply)
    # 2. the other calls: one required parameter at a time, the model writing its value
    for k in range(max((len(p) for p in params if p), default=0)):
        for quoted in (True, False):
            names = {i: p[k][0] for i, p in enumerate(params) if p and k < len(p) and (p[k][1] == "string") == quoted}
            if not names:
                continue
            group = list(names)
            for i, name in names.items():
                texts[i] += (", " if k else "") + json.dumps(name) + (': "' if quoted else ": ")
            replies = _continue(model, cfg, [active[i] for i in group], [texts[i] for i in group],
                                ('"', "\n") if quoted else (",", "}", "\n"))
            for i, reply in zip(group, replies):
                texts[i] += json.dumps(reply, ensure_ascii=False)[1:-1] + '"' if quoted else reply.strip()
    return [t + "}" if p else t for t, p in zip(texts, params)]


def _run_trials(
    model: ChatModel, cfg: ExploreConfig, todo: list[tuple[Api, gym.Env]], memories: list[tuple[list[str], list[dict[str, Any]]]],
    episode: int, trial: int,
) -> list[dict[str, Any]]:
    """One trial for each API in ``todo``, in lockstep; the trial records, in ``todo`` order."""
    # 1. imagine a query per API
    prompts = [guided_imagine_messages(api.name, api.doc_text(), api.doc, ltm, stm) if cfg.guided
               else imagine_messages(api.doc_text(), ltm, stm) for (api, _), (ltm, stm) in zip(todo, memories)]
    raw_queries = model.chat(prompts, max_new_tokens=cfg.query_max_tokens, temperature=cfg.temperature, stop=QUERY_STOP)
    queries = [clean_query(q) for q in raw_queries]
    if cfg.guided:  # a copy of the demonstration is no query of this API
        queries = ["" if q == GUIDED_DEMO_QUERY else q for q in queries]
    attempts = [_Attempt(env, q, api) for (api, env), q in zip(todo, queries)]
    # 2. try it in the env: up to max_turn actions, then the final answer
    for turn in range(cfg.max_turn + 1):
        active = [a for a in attempts if not a.done]
        if not active:
            break
        last = turn == cfg.max_turn
        if cfg.guided:
            actions = _guided_actions(model, cfg, active, last=last)
        else:
            actions = model.chat([a.conversation() for a in active], max_new_tokens=cfg.action_max_tokens,
                                 temperature=cfg.temperature, stop=tuple(active[0].base.protocol.stop))
        for a, action in zip(active, actions):
            a.act(action, last=last)
    # 3. reflect: was the query fulfilled?
    asked = [a for a in attempts if a.query]
    verdicts = model.chat([a.conversation() + [{"role": "user", "content": REFLECTION_PROMPT}] for a in asked],
                          max_new_tokens=cfg.reflection_max_tokens, temperature=0.0) if asked else []
    verdict_of = {id(a): v for a, v in zip(asked, verdicts)}
    records = []
    for (api, _), (ltm, stm), a in zip(todo, memories, attempts):
        text = verdict_of.get(id(a))
        records.append({
            "api": api.name, "source": api.source, "episode": episode, "trial": trial, "query": a.query,
            "steps": a.steps, "final_answer": a.final_answer,
            "reflection": parse_reflection(text) if text is not None else None,
            "reflection_text": text if text is not None else "",
            "ltm": ltm, "stm": stm, "truncated": a.truncated, "guided": cfg.guided, "explorer": model.name,
            "time": time.time(),
        })
    return records


# ---------------------------------------------------------------------------------- the loop
def explore(cfg: ExploreConfig, model: ChatModel | None = None) -> Path:
    """Run (or resume) STE exploration as ``cfg`` says; return the trials file.

    Args:
        cfg: What to explore and how.
        model: The explorer (default: :func:`agents.ste.chat.load_chat_model` of ``cfg.model``).
    """
    from tqdm.auto import tqdm

    # 1. the pool, one env per API, and what the trials file already holds
    targets = api_targets(cfg.apis)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    trials = load_trials(out)
    by_api: dict[str, list[dict[str, Any]]] = {}
    for t in trials:
        by_api.setdefault(str(t["api"]), []).append(t)
    done = {_key(t) for t in trials}
    keys = [(api.name, e, k) for api, _ in targets for e in range(cfg.num_episodes) for k in range(cfg.num_stm_slots)]
    remaining = [key for key in keys if key not in done]
    if not remaining:
        logger.info("%s already holds every trial (%d)", out, len(keys))
        return out
    if model is None:
        model = load_chat_model(cfg.model, base_url=cfg.base_url, api_key=cfg.api_key, device=cfg.device,
                                backend=cfg.backend, dtype=cfg.dtype, batch_size=cfg.batch_size, timeout=cfg.timeout,
                                max_retries=cfg.retries)
    envs = {api.name: gym.make(EXPLORE_ENV_ID, apis=[spec], protocol="react", max_episode_steps=cfg.max_turn + 1)
            for api, spec in targets}
    wanted = set(keys)
    solved = sum(t.get("reflection") == "yes" for t in trials if _key(t) in wanted)
    bar = tqdm(total=len(keys), initial=len(keys) - len(remaining), desc="ste explore", unit="trial",
               disable=not cfg.progress)
    # 2. (episode, trial) in order; the APIs that lack it run together
    try:
        for episode in range(cfg.num_episodes):
            for trial in range(cfg.num_stm_slots):
                todo = [(api, envs[api.name]) for api, _ in targets if (api.name, episode, trial) not in done]
                if not todo:
                    continue
                _seed(cfg.seed, episode, trial)
                memories = [_memories(by_api.get(api.name, []), episode, cfg.num_stm_slots) for api, _ in todo]
                records = _run_trials(model, cfg, todo, memories, episode, trial)
                # 3. save each trial at once; the memories grow from the same records
                with out.open("a", encoding="utf-8") as f:
                    for r in records:
                        f.write(_json_line(r))
                        f.flush()
                        by_api.setdefault(r["api"], []).append(r)
                        done.add(_key(r))
                solved += sum(r["reflection"] == "yes" for r in records)
                bar.update(len(records))
                bar.set_postfix(episode=episode, solved=f"{solved}/{bar.n}")
    finally:
        bar.close()
        for env in envs.values():
            env.close()
    return out


def split_list_args(argv: Sequence[str], options: Sequence[str] = ("--apis",)) -> list[str]:
    """``--apis a b --seed 0`` -> ``--apis a --apis b --seed 0``, so list options take several values.

    >>> split_list_args(["--apis", "apichain:get_city", "calculator", "--seed", "1"])
    ['--apis', 'apichain:get_city', '--apis', 'calculator', '--seed', '1']
    """
    out: list[str] = []
    current: str | None = None
    for arg in argv:
        if arg.startswith("-"):
            current = arg if arg in options else None
            out.append(arg)
        elif current is not None and out and out[-1] != current:
            out += [current, arg]
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``toolenv ste explore [options]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    cfg = config_from_args(ExploreConfig, split_list_args(args), prog="toolenv ste explore")
    out = explore(cfg)
    trials = load_trials(out)
    solved = sum(t.get("reflection") == "yes" for t in trials)
    print(f"{len(trials)} trials in {out} ({solved} reflected as solved); "
          f"next: toolenv ste filter --trials {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
