"""Held-out tool-use tests with ground truth for STE's evaluation: is the first call right?

STE (Wang et al. 2024) scores a model on test queries of the explored APIs by its first action:
*well-formed* (it parses), *API match* (it names the right API) and *correct* (API and arguments
match, judged like BFCL's AST checker). A :class:`CallTest` is one such query: the APIs offered,
their docs and the gold first call in BFCL's possible-answer form (``{"get_city": {"city":
["Paris"]}}``; ``""`` among a parameter's values means it may be left out), so that
:func:`toolenv.envs.bfcl.ast_check` judges a model's call (:meth:`CallTest.check` does it).

- :func:`apichain_call_tests`: single-API queries generated from templates over the tables of
  :mod:`toolenv.tools.apis` with a seeded RNG; each query (API and wording) belongs to one
  split by a CRC32 hash, so ``split="test"`` never repeats a ``"train"`` query
  (the explore env's built-in queries are ``"train"``). Plus the first call of the APIChain
  multi-step test tasks, with ``env_id`` and ``index`` for end-to-end success in the env.
- :func:`bfcl_call_tests`: BFCL multi-turn (the first ground-truth call of each turn, the
  turn's user text as the query) and BFCL's single-turn categories (the entry and its possible
  answer). Needs the optional ``bfcl-eval`` package.

Example:
    >>> tests = apichain_call_tests(3, apis=["get_city"], multi_step=0)
    >>> tests[0].query, tests[0].gold
    ('Tell me the time zone and country of London.', {'get_city': {'city': ['London']}})
    >>> tests[0].check([{"name": "get_city", "arguments": {"city": "london"}}])["valid"]
    True
"""

from __future__ import annotations

import copy
import functools
import random
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolenv.datasets.base import check_choice
from toolenv.tools import apis as _t
from toolenv.tools.pool import APICHAIN_APIS, Api, api_pool
from toolenv.types import ToolCall

__all__ = [
    "BFCL_TEST_CATEGORIES",
    "CallTest",
    "apichain_call_tests",
    "bfcl_call_tests",
    "bfcl_function_doc",
    "call_to_answer",
]

#: Categories :func:`bfcl_call_tests` accepts.
BFCL_TEST_CATEGORIES: tuple[str, ...] = (
    "multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context",
    "simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance",
)


# ------------------------------------------------------------------------------------ CallTest
@dataclass(frozen=True)
class CallTest:
    """One held-out test query and its gold first call.

    Attributes:
        id: Unique, e.g. ``"ste-apichain-test-get_city-0"`` or ``"multi_turn_base_3-turn1"``.
        query: The user's request.
        apis: Pool specs of the APIs offered (:func:`toolenv.tools.pool.api_pool`); empty for
            BFCL single-turn entries, whose functions are only described.
        functions: The docs of the offered functions, as the model sees them (``Api.doc`` for
            pool APIs; BFCL's docs for single-turn entries).
        gold: The gold first call in BFCL's possible-answer form; ``{}`` when no call is right
            (``irrelevance``).
        env_id: An env where the query is a task, for end-to-end success (optional).
        env_kwargs: Keyword arguments for ``gym.make(env_id, ...)``.
        index: ``reset(options={"index": index})`` starts the task in that env.
        category: How :meth:`check` judges: ``"apichain"``, a BFCL category such as
            ``"multi_turn_base"`` or ``"simple_python"``.
        answers: BFCL's whole possible answer for single-turn entries (several calls in the
            ``parallel`` categories); ``(gold,)`` otherwise.
        turn: For BFCL multi-turn tests, the turn of the entry (earlier turns come first in the env).
    """

    id: str
    query: str
    apis: tuple[str, ...]
    functions: tuple[dict[str, Any], ...]
    gold: dict[str, Any]
    env_id: str | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    index: int | None = None
    category: str = "apichain"
    answers: tuple[dict[str, Any], ...] = ()
    turn: int | None = None

    @property
    def gold_name(self) -> str | None:
        """The name of the gold first call (``None`` when no call is right)."""
        return next(iter(self.gold), None)

    def gold_call(self) -> ToolCall:
        """One correct first call: each parameter's first allowed value (optional ones left out).

        >>> apichain_call_tests(1, apis=["get_weather"], multi_step=0)[0].gold_call()
        ToolCall(name='get_weather', arguments={'city': 'Tokyo', 'day': 'Friday'}, positional=None, raw='')
        """
        if not self.gold:
            raise ValueError(f"Expected a test with a gold call, got {self.id!r} (no call is right).")
        return _answer_to_call(self.gold, self.functions)

    def gold_calls(self) -> list[ToolCall]:
        """One correct reply: a call per possible answer (several for BFCL's ``parallel`` categories)."""
        return [_answer_to_call(a, self.functions) for a in (self.answers or ((self.gold,) if self.gold else ()))]

    def check(self, calls: Sequence[ToolCall | Mapping[str, Any]]) -> dict[str, Any]:
        """Judge a model's calls like BFCL's AST checker (:func:`toolenv.envs.bfcl.ast_check`).

        Args:
            calls: The calls of the model's first action, as :class:`~toolenv.types.ToolCall` or
                ``{"name", "arguments"}`` dicts. Only the first one counts (STE's first action),
                except for BFCL single-turn entries, where the whole reply does, as in BFCL.

        Returns:
            ``{"valid", "api_match", "error", "error_type"}``: ``api_match`` is STE's API match
            (the first call names the gold API), ``valid`` STE's correctness.
        """
        from toolenv.envs.bfcl import ast_check

        output = [_call_dict(c, self.functions) for c in calls]
        if not self.gold:  # irrelevance: right when no call is made
            ok = not output
            return {"valid": ok, "api_match": ok, "error": [] if ok else ["A call was made where none fits."],
                    "error_type": None if ok else "irrelevance_error:decoder_success"}
        api_match = bool(output) and next(iter(output[0])) == self.gold_name
        if not output:
            return {"valid": False, "api_match": False, "error": ["No call."], "error_type": "ast_decoder:decoder_failed"}
        functions = [bfcl_function_doc(f) for f in self.functions]
        whole = self.category in _SINGLE_TURN and len(self.answers) > 0
        if whole:
            result = ast_check(functions, output, list(self.answers), self.category)
        else:
            result = ast_check(functions, output[:1], [self.gold], "multiple")
        return {"valid": bool(result["valid"]), "api_match": api_match, "error": list(result.get("error", [])),
                "error_type": None if result["valid"] else result.get("error_type")}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallTest:
        """The test a :meth:`to_dict` dict (e.g. a line of a JSONL file) describes."""
        return cls(
            id=str(data["id"]), query=str(data["query"]), apis=tuple(data.get("apis", ())),
            functions=tuple(data.get("functions", ())), gold=dict(data.get("gold") or {}),
            env_id=data.get("env_id"), env_kwargs=dict(data.get("env_kwargs") or {}), index=data.get("index"),
            category=str(data.get("category", "apichain")), answers=tuple(data.get("answers", ())),
            turn=data.get("turn"),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form; :meth:`from_dict` reads it back."""
        return {"id": self.id, "query": self.query, "apis": list(self.apis), "functions": list(self.functions),
                "gold": self.gold, "env_id": self.env_id, "env_kwargs": dict(self.env_kwargs), "index": self.index,
                "category": self.category, "answers": list(self.answers), "turn": self.turn}


def _answer_to_call(answer: Mapping[str, Any], functions: Sequence[Mapping[str, Any]] = ()) -> ToolCall:
    """One call an answer allows: each parameter's first allowed value; ``""`` alone means leave it
    out, unless the doc requires the parameter (then ``""`` is the value); parameters the doc does
    not list are left out (stray keys of BFCL's answer files)."""
    (name, params), = answer.items()
    doc = next((f for f in functions if f.get("name") == name), None)
    props = (doc or {}).get("parameters", {}).get("properties")
    required = set((doc or {}).get("parameters", {}).get("required", []))
    arguments: dict[str, Any] = {}
    for key, values in params.items():
        if props is not None and key not in props:
            continue
        chosen = [v for v in values if v != ""]
        if chosen:
            arguments[key] = _first_nested(chosen[0])
        elif key in required and "" in values:
            arguments[key] = ""
    return ToolCall(name, arguments)


def _first_nested(value: Any) -> Any:
    """A possible-answer value with nested ``{key: [allowed]}`` dicts reduced to first choices."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            choices = [x for x in v if x != ""] if isinstance(v, list) else [v]
            if choices:
                out[k] = choices[0]
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [_first_nested(v) for v in value]
    return value


def _call_dict(call: ToolCall | Mapping[str, Any], functions: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """A call as ``{name: {param: value}}``; a positional input goes to the first required parameter."""
    if isinstance(call, ToolCall):
        name, arguments, positional = call.name, dict(call.arguments), call.positional
    else:
        name, arguments, positional = str(call.get("name", "")), dict(call.get("arguments") or {}), call.get("positional")
    if positional is not None and not arguments:
        doc = next((f for f in functions if f.get("name") == name), None)
        params = (doc or {}).get("parameters", {})
        targets = list(params.get("required", [])) or list(params.get("properties", {}))
        if targets:
            arguments = {targets[0]: positional}
    return {name: arguments}


_SINGLE_TURN = ("simple_python", "multiple", "parallel", "parallel_multiple")
_BFCL_TYPES = {"object": "dict", "number": "float"}


def bfcl_function_doc(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-schema function doc with BFCL's type names (``dict``, ``float``), as ``ast_check`` wants.

    BFCL's own docs pass through unchanged.

    >>> bfcl_function_doc({"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "number"}}}})
    {'name': 'f', 'parameters': {'type': 'dict', 'properties': {'x': {'type': 'float'}}, 'required': []}}
    """
    out = dict(doc)
    out["parameters"] = _bfcl_schema(doc.get("parameters") or {"type": "dict", "properties": {}})
    out["parameters"].setdefault("required", [])
    return out


def _bfcl_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(schema)
    kind = schema.get("type", "string")
    out["type"] = _BFCL_TYPES.get(kind, kind) if isinstance(kind, str) else "string"
    if isinstance(schema.get("properties"), Mapping):
        out["properties"] = {k: _bfcl_schema(v) for k, v in schema["properties"].items()}
    if isinstance(schema.get("items"), Mapping):
        out["items"] = _bfcl_schema(schema["items"])
    return out


def call_to_answer(call: ToolCall, doc: Mapping[str, Any]) -> dict[str, Any]:
    """A concrete call in possible-answer form: each given value allowed, each other parameter optional.

    Values are normalised the way BFCL's checker compares them (an int for a ``float``/``number``
    parameter becomes a float, tuples lists, dicts maps of allowed values); a left-out
    parameter may be left out or given its documented default.

    >>> doc = {"name": "ls", "parameters": {"type": "object", "properties": {"a": {"type": "boolean", "default": False}}}}
    >>> call_to_answer(ToolCall("ls", {}), doc)
    {'ls': {'a': ['', False]}}
    """
    props: Mapping[str, Any] = (doc.get("parameters") or {}).get("properties", {})
    params: dict[str, list[Any]] = {}
    for key, schema in props.items():
        if key in call.arguments:
            params[key] = [_allowed(call.arguments[key], schema)]
        else:
            params[key] = [""]
            default = schema.get("default", None)
            if default is not None and default != "None" and default != "":
                params[key].append(default)
    for key, value in call.arguments.items():  # arguments the doc does not list: kept, so checks can see them
        if key not in params:
            params[key] = [value]
    return {call.name: params}


def _allowed(value: Any, schema: Mapping[str, Any]) -> Any:
    kind = schema.get("type")
    if kind in ("number", "float") and type(value) is int:
        return float(value)
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, dict):
        return {k: [v] for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [{k: [x] for k, x in v.items()} for v in value]
    return value


# -------------------------------------------------------------------------------- APIChain tests
# A template draws arguments with the RNG and returns (query, arguments, allowed values per argument).
_Drawn = tuple[str, dict[str, Any], dict[str, list[Any]]]
_Template = Callable[[random.Random], _Drawn]

_CITIES = tuple(_t.CITIES)
_CITIES_NOT_COUNTRIES = tuple(c for c in _t.CITIES if c not in _t.COUNTRIES)  # "Singapore" would be ambiguous
_COUNTRIES = tuple(_t.COUNTRIES)
_CURRENCIES = tuple(_t.USD_PER_UNIT)
_PRODUCTS = tuple(_t.PRODUCTS)
_EMPLOYEES = tuple(_t.EMPLOYEES)
_DEPARTMENTS = tuple(_t.DEPARTMENTS)


def _aliases(unit: str) -> list[str]:
    return [unit, *sorted(a for a, u in _t._UNIT_ALIASES.items() if u == unit and a != unit.casefold())]


def _days(day: str) -> list[str]:
    return [day, day[:3]]


def _one(arg: str, value: Any, *more: Any) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    return {arg: value}, {arg: [value, *more]}


def _entity(api_arg: str, pool: Sequence[str], *phrasings: str) -> list[_Template]:
    def make(text: str) -> _Template:
        def draw(rng: random.Random) -> _Drawn:
            value = rng.choice(pool)
            args, allowed = _one(api_arg, value)
            return text.format(value), args, allowed
        return draw
    return [make(p) for p in phrasings]


def _pair(a: str, b: str, pool: Sequence[str], phrasings: Sequence[str], *, symmetric: bool) -> list[_Template]:
    def make(text: str) -> _Template:
        def draw(rng: random.Random) -> _Drawn:
            x, y = rng.sample(list(pool), 2)
            allowed = {a: [x, y], b: [y, x]} if symmetric else {a: [x], b: [y]}
            return text.format(x, y), {a: x, b: y}, allowed
        return draw
    return [make(p) for p in phrasings]


def _weather(text: str) -> _Template:
    def draw(rng: random.Random) -> _Drawn:
        city, day = rng.choice(_CITIES), rng.choice(_t.DAYS)
        return text.format(city=city, day=day), {"city": city, "day": day}, {"city": [city], "day": _days(day)}
    return draw


_UNIT_PAIRS = (("km", "mi"), ("mi", "km"), ("m", "ft"), ("ft", "m"), ("kg", "lb"), ("lb", "kg"), ("g", "oz"),
               ("oz", "g"), ("l", "gal"), ("gal", "l"), ("C", "F"), ("F", "C"), ("C", "K"), ("K", "C"), ("km", "m"))
_UNIT_WORDS = {"km": "kilometers", "mi": "miles", "m": "meters", "ft": "feet", "kg": "kilograms", "lb": "pounds",
               "g": "grams", "oz": "ounces", "l": "liters", "gal": "gallons", "C": "degrees Celsius",
               "F": "degrees Fahrenheit", "K": "kelvin"}


def _convert(text: str) -> _Template:
    def draw(rng: random.Random) -> _Drawn:
        src, dst = rng.choice(_UNIT_PAIRS)
        value: float = rng.choice([rng.randint(1, 500), round(rng.uniform(0.5, 100), 1)])
        if value == int(value):
            value = int(value)
        shown = f"{value:g}"
        query = text.format(v=shown, src=_UNIT_WORDS[src], dst=_UNIT_WORDS[dst])
        args = {"value": value, "from_unit": src, "to_unit": dst}
        return query, args, {"value": [float(value)], "from_unit": _aliases(src), "to_unit": _aliases(dst)}
    return draw


def _calc(text: str, forms: Callable[[int, int], list[str]], lo: int = 2, hi: int = 999) -> _Template:
    def draw(rng: random.Random) -> _Drawn:
        a, b = rng.randint(lo, hi), rng.randint(2, 99)
        allowed = forms(a, b)
        return text.format(a=a, b=b), {"expression": allowed[0]}, {"expression": allowed}
    return draw


_API_TEMPLATES: dict[str, list[_Template]] = {
    "find_employee": _entity(
        "name", _EMPLOYEES, "What department does {} work in?", "What is {}'s yearly salary?",
        "In which city is {} based?", "What is the employee ID of {}?", "Which currency is {} paid in?",
        "Can you look up the staff record of {}?"),
    "get_department": _entity(
        "department", _DEPARTMENTS, "Who manages the {} department?", "What is the yearly budget of {}?",
        "On which floor is the {} department?", "How many people work in {}?", "Who is the head of {}?",
        "What's the headcount of the {} team?", "How big is the budget of the {} department?",
        "Which floor should I go to for {}?"),
    "get_city": _entity(
        "city", _CITIES_NOT_COUNTRIES, "What is the population of {}?", "Which country is {} in?", "Which time zone is {} in?",
        "What is the UTC offset of {}?", "How many people live in {}?", "Tell me the time zone and country of {}."),
    "get_country": _entity(
        "country", _COUNTRIES, "What currency is used in {}?", "What is the capital of {}?",
        "What language is spoken in {}?", "How many people live in {}?", "Which city is the capital of {}?",
        "What's the currency code of {}?"),
    "get_distance": _pair("city_a", "city_b", _CITIES, (
        "How far is it from {} to {}?", "What's the distance between {} and {} in km?",
        "How many kilometers separate {} and {}?", "If I fly from {} to {}, how far is that?"), symmetric=True),
    "get_weather": [_weather(t) for t in (
        "What's the weather in {city} on {day}?", "Will it rain in {city} on {day}?",
        "How warm will it get in {city} on {day}?", "What's the low temperature in {city} on {day}?",
        "Should I pack an umbrella for {city} on {day}?")],
    "get_exchange_rate": _pair("base", "target", _CURRENCIES, (
        "What is the exchange rate from {} to {}?", "How many {1} do I get for one {0}?",
        "What's 1 {} worth in {}?", "Give me the current {}/{} rate."), symmetric=False),
    "lookup_product": _entity(
        "name", _PRODUCTS, "How much does the {} cost?", "How many units of the {} are in stock?",
        "How heavy is the {}?", "Where is the {} made?", "What currency is the {} priced in?"),
    "convert_units": [_convert(t) for t in (
        "How many {dst} is {v} {src}?", "Convert {v} {src} to {dst}.", "What is {v} {src} in {dst}?")],
    "calculator": [
        _calc("What is {a} times {b}?", lambda a, b: [f"{a}*{b}", f"{b}*{a}", f"{a}×{b}"]),
        _calc("What is {a} plus {b}?", lambda a, b: [f"{a}+{b}", f"{b}+{a}"]),
        _calc("How much is {a} minus {b}?", lambda a, b: [f"{a}-{b}"]),
        _calc("What is {a} divided by {b}?", lambda a, b: [f"{a}/{b}", f"{a}÷{b}"]),
        _calc("What is {b}% of {a}?", lambda a, b: [f"{a}*{b}/100", f"{b}/100*{a}", f"{b}%*{a}", f"{a}*{b}%",
                                                    f"{a}*{b / 100:g}", f"{b / 100:g}*{a}"]),
        _calc("What is {a} squared?", lambda a, b: [f"{a}^2", f"{a}**2", f"{a}*{a}"]),
        _calc("What is the square root of {a}?", lambda a, b: [f"sqrt({a})", f"{a}^0.5", f"{a}**0.5"]),
    ],
}


def _is_test_key(key: str) -> bool:
    return zlib.crc32(f"ste:{key}".encode()) % 2 == 0


def _draw_api_tests(api: str, n: int, split: str, seed: int) -> list[tuple[str, dict[str, Any], dict[str, list[Any]]]]:
    """Up to ``n`` distinct queries of ``split`` for one API (fewer when the tables run out)."""
    rng = random.Random(f"ste:{api}:{seed}")
    templates = _API_TEMPLATES[api]
    want_test = split == "test"
    out: list[tuple[str, dict[str, Any], dict[str, list[Any]]]] = []
    seen: set[str] = set()
    for _ in range(max(2_000, 100 * n)):
        if len(out) >= n:
            break
        k = rng.randrange(len(templates))
        query, args, allowed = templates[k](rng)
        key = f"{api}|{' '.join(query.casefold().split())}"  # the wording decides: no query is in both splits
        if key in seen or _is_test_key(key) != want_test:
            continue
        seen.add(key)
        out.append((query, args, allowed))
    return out


@functools.cache
def _apichain_pool() -> dict[str, Api]:
    return {a.name: a for a in api_pool([*(f"apichain:{n}" for n in APICHAIN_APIS), "calculator"])}


def _spec(name: str) -> str:
    return "calculator" if name == "calculator" else f"apichain:{name}"


def apichain_call_tests(
    n: int = 50,
    *,
    split: str = "test",
    seed: int = 0,
    apis: Sequence[str] | None = None,
    multi_step: int | None = None,
) -> list[CallTest]:
    """Single-API test queries for the APIChain APIs, plus first calls of multi-step tasks.

    Args:
        n: Queries per API (fewer for an API whose tables cannot give ``n`` distinct ones,
            e.g. ``get_department``'s six departments).
        split: ``"test"`` (held out) or ``"train"``; a query (API and wording) belongs to one
            split only, whatever the seed.
        seed: Seeds the draw of the single-API queries.
        apis: API names (``"get_city"``) or pool specs (``"apichain:get_city"``, ``"calculator"``);
            default the nine APIChain APIs and the calculator. Multi-step tasks are kept when
            their gold calls use only these APIs.
        multi_step: How many APIChain multi-step tasks (``toolenv/APIChain-Test-v1`` for the
            test split, ``toolenv/APIChain-v1`` for train) to add, in task order; default ``n``.
            Their gold is the first call of the task's solution; ``env_id`` and ``index`` run
            the whole task. All ten tools are offered, as in the env.

    Returns:
        Per API in order, its single-API tests (one API offered), then the multi-step tests.

    Raises:
        ValueError: An unknown API name or split.
    """
    check_choice("split", split, ("train", "test"))
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"Expected n to be a non-negative int, got {n!r}.")
    pool = _apichain_pool()
    names = list(pool) if apis is None else [_api_name(a, pool) for a in apis]
    tests: list[CallTest] = []
    for name in names:
        api = pool[name]
        for k, (query, args, allowed) in enumerate(_draw_api_tests(name, n, split, seed)):
            gold = {name: {key: list(allowed[key]) for key in api.doc["parameters"]["properties"] if key in args}}
            tests.append(CallTest(f"ste-apichain-{split}-{name}-{k}", query, (_spec(name),), (copy.deepcopy(api.doc),),
                                  gold, category="apichain", answers=(gold,)))
    tests.extend(_multi_step_tests(n if multi_step is None else multi_step, split, set(names), pool))
    return tests


def _api_name(spec: str, pool: Mapping[str, Api]) -> str:
    name = spec.split(":", 1)[1] if spec.startswith("apichain:") else spec
    if name not in pool:
        from toolenv.tools.base import did_you_mean

        raise ValueError(f"Unknown APIChain API {spec!r}: expected one of {list(pool)}.{did_you_mean(name, pool)}")
    return name


def _multi_step_tests(count: int, split: str, names: set[str], pool: Mapping[str, Api]) -> list[CallTest]:
    if count <= 0:
        return []
    from toolenv.datasets.apichain import apichain_tasks

    tasks = apichain_tasks(split)
    env_id = "toolenv/APIChain-Test-v1" if split == "test" else "toolenv/APIChain-v1"
    functions = tuple(copy.deepcopy(a.doc) for a in pool.values())
    specs = tuple(_spec(n) for n in pool)
    out: list[CallTest] = []
    for i in range(len(tasks)):
        if len(out) >= count:
            break
        task = tasks[i]
        if not {c.name for c in task.solution} <= names:
            continue
        first = task.solution[0]
        gold = call_to_answer(first, pool[first.name].doc)
        out.append(CallTest(f"ste-apichain-{split}-chain-{i}", task.question, specs, functions, gold,
                            env_id=env_id, env_kwargs={}, index=i, category="apichain", answers=(gold,)))
    return out


# ------------------------------------------------------------------------------------ BFCL tests
def bfcl_call_tests(category: str, n: int | None = None, *, classes: Sequence[str] | None = None) -> list[CallTest]:
    """BFCL tests: multi-turn first calls per turn, or single-turn entries with their possible answers.

    Args:
        category: ``"multi_turn_base"`` (or ``"base"``), ``"multi_turn_miss_func"``,
            ``"multi_turn_miss_param"``, ``"multi_turn_long_context"``, or a single-turn category:
            ``"simple_python"``, ``"multiple"``, ``"parallel"``, ``"parallel_multiple"``, ``"irrelevance"``.
        n: At most this many tests, in file order; default all.
        classes: Multi-turn only: keep the tests whose gold call belongs to one of these API
            classes (e.g. ``["GorillaFileSystem"]``).

    Returns:
        Multi-turn: per entry and turn with ground-truth calls, a test whose query is the turn's
        user text, whose functions are those offered at that turn (``Api.doc`` of the involved
        classes) and whose gold is the turn's first ground-truth call; ``env_id``
        ``"toolenv/BFCLMultiTurn-v0"``, ``index`` the entry and ``turn`` the turn. Single-turn: the
        entry, its functions (BFCL's docs) and its possible answer (``gold`` the first call,
        ``answers`` all of them); ``env_id`` ``"toolenv/BFCL-v0"``.

    Raises:
        BFCLNotInstalledError: ``bfcl-eval`` is not installed.
    """
    from toolenv.datasets.bfcl import MULTI_TURN_CATEGORIES, SINGLE_TURN_CATEGORIES

    short = category.removeprefix("multi_turn_")
    if short in MULTI_TURN_CATEGORIES:
        tests: Iterable[CallTest] = _multi_turn_tests(short, classes)
    else:
        check_choice("category", category, BFCL_TEST_CATEGORIES)
        if category not in SINGLE_TURN_CATEGORIES:  # pragma: no cover - the two lists agree
            raise ValueError(f"Unknown BFCL category {category!r}.")
        tests = _single_turn_tests(category)
    out = []
    for test in tests:
        if n is not None and len(out) >= n:
            break
        out.append(test)
    return out


def _multi_turn_tests(category: str, classes: Sequence[str] | None) -> Iterable[CallTest]:
    from toolenv.datasets.bfcl import load_bfcl_multi_turn
    from toolenv.envs.bfcl import _signatures_of
    from toolenv.protocols.python_calls import parse_python_calls
    from toolenv.tools.pool import bfcl_classes

    known = bfcl_classes()
    for c in classes or ():
        if c not in known:
            from toolenv.tools.base import did_you_mean

            raise ValueError(f"Unknown BFCL class {c!r} in classes: expected one of {list(known)}.{did_you_mean(c, known)}")
    wanted = set(classes) if classes is not None else None
    tasks = load_bfcl_multi_turn(category)
    for index, task in enumerate(tasks):
        meta = task.meta
        involved = list(meta["involved_classes"])
        docs = {a.name: a for c in involved for a in api_pool(f"bfcl:{c}")}
        signatures = {m: p for c in involved for m, p in _signatures_of(c).items()}
        offered = [d["name"] for d in meta["functions"]]
        for turn, strings in enumerate(meta["ground_truth"]):
            offered += [d["name"] for d in meta["missed_functions"].get(str(turn), [])]
            if not strings or meta["turns"][turn] is None:
                continue
            calls = parse_python_calls(strings[0], signatures)
            if not isinstance(calls, tuple) or not calls:
                continue
            first = calls[0]
            api = docs.get(first.name)
            if api is None or (wanted is not None and api.bfcl_class not in wanted):
                continue
            functions = tuple(copy.deepcopy(docs[name].doc) for name in offered if name in docs)
            gold = call_to_answer(first, api.doc)
            yield CallTest(f"{task.id}-turn{turn}", meta["turns"][turn], tuple(f"bfcl:{c}" for c in involved),
                           functions, gold, env_id="toolenv/BFCLMultiTurn-v0", env_kwargs={"category": category},
                           index=index, category=f"multi_turn_{category}", answers=(gold,), turn=turn)


def _single_turn_tests(category: str) -> Iterable[CallTest]:
    from toolenv.datasets.bfcl import load_bfcl_single_turn

    for index, task in enumerate(load_bfcl_single_turn(category)):
        truth = [dict(t) for t in task.meta["ground_truth"]]
        gold = copy.deepcopy(truth[0]) if truth else {}
        yield CallTest(task.id, task.question, (), tuple(copy.deepcopy(task.meta["functions"])), gold,
                       env_id="toolenv/BFCL-v0", env_kwargs={"category": category}, index=index,
                       category=category, answers=tuple(copy.deepcopy(truth)))
