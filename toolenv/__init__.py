"""toolenv: tool-use tasks for language models as Gymnasium environments.

Importing ``toolenv`` registers every task under ``toolenv/<Task>-v<N>``::

    >>> import gymnasium as gym, toolenv
    >>> env = gym.make("toolenv/Math-v0")
    >>> obs, info = env.reset(seed=0)

This module stays cheap to import: entry points are strings, and neither torch nor
transformers is imported.
"""

from __future__ import annotations

from toolenv.registration import ENV_INFO, EnvInfo, check_env_args, held_out_env_of, parse_kw, register_env
from toolenv.spaces import MAX_ACTION_CHARS, MAX_OBSERVATION_CHARS, AnyText, ToolAction
from toolenv.types import Task, ToolCall

__all__ = [
    "ENV_INFO",
    "MAX_ACTION_CHARS",
    "MAX_OBSERVATION_CHARS",
    "AnyText",
    "EnvInfo",
    "ToolAction",
    "Task",
    "ToolCall",
    "check_env_args",
    "parse_kw",
    "register_env",
    "held_out_env_of",
    "astep",
    "restore",
    "snapshot",
]


async def astep(env, action):  # type: ignore[no-untyped-def]
    """``env.step(action)`` in a worker thread, for event loops; see :func:`toolenv.core.astep`."""
    from toolenv.core import astep as _astep

    return await _astep(env, action)


def snapshot(env):  # type: ignore[no-untyped-def]
    """Save a toolenv env's whole state (wrappers included); see :func:`toolenv.core.snapshot`."""
    from toolenv.core import snapshot as _snapshot

    return _snapshot(env)


def restore(env, snap) -> None:  # type: ignore[no-untyped-def]
    """Put a toolenv env back to a :func:`snapshot`; see :func:`toolenv.core.restore`."""
    from toolenv.core import restore as _restore

    _restore(env, snap)

__version__ = "0.1.0"

_MATH = "toolenv.envs.math:MathEnv"
_MATH_STEPS = 4

register_env(
    "toolenv/Math-v0",
    _MATH,
    description="Procedural arithmetic word problems (levels 1-4) with a calculator; needs no files.",
    tools=("calculator",),
    datasets=("procedural:train",),
    max_episode_steps=_MATH_STEPS,
    kwargs={"dataset": "procedural", "split": "train"},
)
register_env(
    "toolenv/Math-Test-v0",
    _MATH,
    description="Held-out procedural arithmetic word problems with a calculator.",
    tools=("calculator",),
    datasets=("procedural:test",),
    max_episode_steps=_MATH_STEPS,
    kwargs={"dataset": "procedural", "split": "test"},
)

_DATASETS = {
    # name in ids: (dataset kwarg, description, extra splits)
    "GSM8K": ("gsm8k", "GSM8K grade-school math word problems (Cobbe et al. 2021)", ()),
    "ASDiv": ("asdiv", "ASDiv-A arithmetic word problems (Miao et al. 2020), TRICE's 952/266 split", ()),
    "MAWPS": ("mawps", "MAWPS word problems (Koncel-Kedziorski et al. 2016); subset= picks MultiArith/AddSub/SingleEq/SingleOp", ("valid",)),
    "SVAMP": ("svamp", "SVAMP perturbed word problems (Patel et al. 2021), TRICE's 800/200 split", ()),
}
for _name, (_ds, _desc, _extra) in _DATASETS.items():
    for _split in ("train", "test", *_extra):
        _suffix = "" if _split == "train" else f"-{_split.title()}"
        register_env(
            f"toolenv/{_name}{_suffix}-v0",
            _MATH,
            description=f"{_desc}, {_split} split, with a calculator.",
            tools=("calculator",),
            datasets=(f"{_ds}:{_split}",),
            needs_data=True,
            max_episode_steps=_MATH_STEPS,
            kwargs={"dataset": _ds, "split": _split},
        )

# --- APIChain ---
_QA = "toolenv.envs.qa:QAEnv"
_QA_STEPS = 4
_QA_DATASETS = {
    # name in ids: (dataset kwarg, description, test split)
    "WebQuestions": ("webquestions", "WebQuestions (Berant et al. 2013), TRICE's QA task", "test"),
    "NQ": ("nq", "NaturalQuestions open (Lee et al. 2019), TRICE's QA task; train needs NQ-open.train.jsonl", "test"),
    "TriviaQA": ("triviaqa", "TriviaQA unfiltered (Joshi et al. 2017), TRICE's QA task", "test"),
    "HotpotQA": ("hotpotqa", "HotpotQA distractor questions (Yang et al. 2018), 80 train / 20 test, with gold searches", "test"),
}
for _name, (_ds, _desc, _test) in _QA_DATASETS.items():
    for _suffix, _split in (("", "train"), ("-Test", _test)):
        register_env(
            f"toolenv/{_name}{_suffix}-v0",
            _QA,
            description=f"{_desc} ({_split} split): answer with WikiSearch (BM25 over a local passage corpus).",
            tools=("WikiSearch",),
            datasets=(f"{_ds}:{_split}",),
            needs_data=True,
            max_episode_steps=_QA_STEPS,
            kwargs={"dataset": _ds, "split": _split},
        )

for _suffix, _split in (("", "train"), ("-Test", "test")):
    register_env(
        f"toolenv/LAMA{_suffix}-v0",
        "toolenv.envs.qa:LAMAEnv",
        description=f"LAMA T-REx cloze facts (Petroni et al. 2019), TRICE's LAMA task ({_split}): answer with QA(question) (qa=: BM25 over the evidence sentences, chat:MODEL, or a callable).",
        tools=("QA",),
        datasets=(f"lama:{_split}",),
        needs_data=True,
        max_episode_steps=_QA_STEPS,
        kwargs={"split": _split},
    )
    register_env(
        f"toolenv/MLQA{_suffix}-v0",
        "toolenv.envs.qa:MLQAEnv",
        description=f"MLQA (Lewis et al. 2020), TRICE's multilingual QA task ({_split}): English context, question in question_lang=, translator(text) (translator=seq2seq:MODEL, chat:MODEL or a callable; required).",
        tools=("translator",),
        datasets=(f"mlqa:{_split}",),
        needs_data=True,
        max_episode_steps=_QA_STEPS,
        kwargs={"split": _split},
    )

_APICHAIN = "toolenv.envs.apichain:APIChainEnv"
_APICHAIN_STEPS = 8
_APICHAIN_TOOLS = (
    "find_employee", "get_department", "get_city", "get_country", "get_distance", "get_weather",
    "get_exchange_rate", "lookup_product", "convert_units", "calculator",
)
_APICHAIN_L1_TOOLS = ("find_employee", "get_department", "get_city")
for _suffix, _split, _level, _tools, _desc in (
    ("", "train", None, _APICHAIN_TOOLS, "Multi-step API questions (2-5 dependent calls, levels 1-4) with StepTool's step-grained rewards"),
    ("-Test", "test", None, _APICHAIN_TOOLS, "Held-out multi-step API questions (2-5 dependent calls, levels 1-4)"),
    ("-L1", "train", 1, _APICHAIN_L1_TOOLS, "Level-1 API chains: exactly two dependent calls, three tools (learning test)"),
    ("-L1-Test", "test", 1, _APICHAIN_L1_TOOLS, "Held-out level-1 API chains: two dependent calls, three tools"),
):
    register_env(
        f"toolenv/APIChain{_suffix}-v1",
        _APICHAIN,
        description=f"{_desc}; no files needed.",
        tools=_tools,
        datasets=(f"apichain:{_split}" if _level is None else f"apichain/L{_level}:{_split}",),
        max_episode_steps=_APICHAIN_STEPS,
        kwargs={"split": _split, "level": _level, **({} if _level is None else {"tools": list(_tools)})},
    )
# --- APIChain ---

# --- BFCL ---
# Needs the optional bfcl-eval package: pip install --no-deps bfcl-eval==2026.3.23 && pip install mpmath
register_env(
    "toolenv/BFCLMultiTurn-v0",
    "toolenv.envs.bfcl:BFCLMultiTurnEnv",
    description="BFCL v4 multi-turn conversations with stateful APIs (file system, messaging, trading, travel, "
    "vehicle, ...), scored by BFCL's state and execution checks; category= base, miss_func, miss_param, "
    "long_context. Needs bfcl-eval.",
    tools=("the involved BFCL API classes' methods",),
    datasets=("bfcl:multi_turn_base",),
    max_episode_steps=60,
    kwargs={"category": "base"},
)
register_env(
    "toolenv/BFCL-v0",
    "toolenv.envs.bfcl:BFCLEnv",
    description="BFCL v4 single-turn function calling scored by BFCL's AST checker; category= simple_python, "
    "multiple, parallel, parallel_multiple, irrelevance. Needs bfcl-eval.",
    tools=("the task's function docs (not executed)",),
    datasets=("bfcl:simple_python",),
    # every step ends the episode (terminated); a limit of 1 would also flag it truncated
    max_episode_steps=2,
    kwargs={"category": "simple_python"},
)
# --- BFCL ---

# --- Explore ---
register_env(
    "toolenv/Explore-v0",
    "toolenv.envs.explore:ExploreEnv",
    description="STE exploration: an imagined query (reset option 'query') tried with the real tools of an API "
    "pool; apis= any pool specs ('apichain', 'apichain:get_city', 'calculator', 'bfcl:GorillaFileSystem', "
    "'pkg.module:function'). Rewards well-formed and successful calls; the explorer's reflection judges the answer.",
    tools=("calculator", "apis= any pool spec"),
    datasets=("ste:apichain-train (built-in queries)",),
    max_episode_steps=5,
    kwargs={"apis": ["calculator"], "protocol": "react"},
)
# --- Explore ---
