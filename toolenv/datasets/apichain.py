"""Multi-step API tasks: questions that take 2-5 dependent calls of :mod:`toolenv.tools.apis`.

Each task is a question whose answer is a number that only a chain of API calls can reach:
later calls take values that earlier calls returned (the department :func:`find_employee`
names is what :func:`get_department` needs; the rate :func:`get_exchange_rate` returns is
what the :func:`calculator` multiplies by). A task keeps its gold call sequence
(``Task.solution``, arguments filled with the actual values), the gold answer (number text, as
the calculator writes it) and, in ``meta``, its level, template, the number of calls and which
field of the last call's output is the answer (``None`` when the last call is the calculator).

Levels: 1 = exactly 2 calls, 3 templates about the company (a tiny model can learn these);
2 = 2-3 calls; 3 = 3-4 calls, unit and currency conversions; 4 = 4-5 calls. Tasks are
generated lazily and deterministically from ``random.Random(f"apichain:{split}:{level}:{index}")``
(string seeds do not depend on ``PYTHONHASHSEED``), as :class:`~toolenv.datasets.math.ProceduralMath`
does. The held-out split never repeats a train question: each question's *key* (its template
and the entities it names, whatever the wording) is assigned to one split by a CRC32 hash,
and a draw whose key belongs to the other split is redrawn.

Example:
    >>> tasks = APIChainTasks("train", level=1)
    >>> task = tasks[17]
    >>> task.id, len(task.solution), task.meta["level"]
    ('apichain-train-L1-17', 2, 1)
"""

from __future__ import annotations

import functools
import json
import random
import re
import zlib
from collections.abc import Callable
from typing import Any

from toolenv.datasets.base import TaskSet, check_choice
from toolenv.tools import apis
from toolenv.tools.calculator import format_number
from toolenv.types import Task, ToolCall

__all__ = ["APICHAIN_SPLITS", "LEVEL_TOOLS", "APIChainTasks", "apichain_tasks", "is_heldout"]

#: Split name -> default number of tasks.
APICHAIN_SPLITS: dict[str, int] = {"train": 10_000, "test": 1_000}
_LEVELS = (1, 2, 3, 4)
_HELDOUT_MOD = 5  # one key in five belongs to the held-out split
_ID_RE = re.compile(r"apichain-(?P<split>[a-z]+)-L(?P<level>[1-4])-(?P<index>\d+)")

_EMPLOYEES = tuple(apis.EMPLOYEES)
_MANAGERS = frozenset(m for m, *_ in apis.DEPARTMENTS.values())
_STAFF = tuple(e for e in _EMPLOYEES if e not in _MANAGERS)
_CITIES = tuple(apis.CITIES)
# Cities whose name does not already say their country (not "Singapore", "Mexico City"), for
# questions whose chain looks the country up: otherwise the question would give it away.
_CITIES_HIDING_COUNTRY = tuple(c for c in _CITIES if apis.CITIES[c][0].casefold() not in c.casefold())
_PRODUCTS = tuple(apis.PRODUCTS)
_TARGETS = ("USD", "EUR", "GBP", "JPY", "CHF")


class _Chain:
    """Runs gold calls through the real APIs and records them, as the env will run them."""

    def __init__(self) -> None:
        self.calls: list[ToolCall] = []

    def __call__(self, tool: str, /, **arguments: Any) -> Any:
        value = apis.API_TOOLS[tool](**arguments)
        self.calls.append(ToolCall(tool, arguments))
        return value

    def calc(self, expression: str) -> str:
        return str(self("calculator", expression=expression))


def _num(value: float | int) -> str:
    """A number exactly as the model sees it in a tool's JSON output."""
    return json.dumps(value)


# A template draws its entities, runs its chain and returns (key, question, answer, answer field).
_Drawn = tuple[str, str, str, "str | None"]
_Template = Callable[[random.Random, _Chain], _Drawn]


def _phrase(rng: random.Random, *options: str) -> str:
    return rng.choice(options)


# ---------------------------------------------------------------------------------------------
# Level 1: exactly two calls about the company
# ---------------------------------------------------------------------------------------------


def _l1_floor(rng: random.Random, run: _Chain) -> _Drawn:
    name = rng.choice(_EMPLOYEES)
    q = _phrase(rng, f"On which floor is the department of {name}?", f"Which floor does {name}'s department work on?")
    dept = run("find_employee", name=name)["department"]
    floor = run("get_department", department=dept)["floor"]
    return f"floor|{name}", q, format_number(floor), "floor"


def _l1_budget(rng: random.Random, run: _Chain) -> _Drawn:
    name = rng.choice(_EMPLOYEES)
    q = _phrase(rng, f"What is the budget of {name}'s department, in USD?",
                f"How big is the yearly budget of the department {name} works in, in USD?")
    dept = run("find_employee", name=name)["department"]
    budget = run("get_department", department=dept)["budget"]
    return f"budget|{name}", q, format_number(budget), "budget"


def _l1_city_population(rng: random.Random, run: _Chain) -> _Drawn:
    name = rng.choice(_EMPLOYEES)
    q = _phrase(rng, f"What is the population of the city where {name} works?",
                f"How many people live in the city {name} works in?")
    city = run("find_employee", name=name)["city"]
    population = run("get_city", city=city)["population"]
    return f"city_population|{name}", q, format_number(population), "population"


# ---------------------------------------------------------------------------------------------
# Level 2: two or three calls
# ---------------------------------------------------------------------------------------------


def _l2_country_population(rng: random.Random, run: _Chain) -> _Drawn:
    city = rng.choice(_CITIES_HIDING_COUNTRY)
    q = _phrase(rng, f"What is the population of the country that {city} is in?",
                f"How many people live in the country where {city} is located?")
    country = run("get_city", city=city)["country"]
    population = run("get_country", country=country)["population"]
    return f"country_population|{city}", q, format_number(population), "population"


def _l2_weather(rng: random.Random, run: _Chain) -> _Drawn:
    name, day = rng.choice(_EMPLOYEES), rng.choice(apis.DAYS)
    field, what = rng.choice((("high_c", "the high temperature, in °C,"), ("low_c", "the low temperature, in °C,"),
                              ("rain_mm", "the rainfall, in mm,")))
    q = f"What is {what} forecast for {day} in the city where {name} works?"
    city = run("find_employee", name=name)["city"]
    value = run("get_weather", city=city, day=day)[field]
    return f"weather|{name}|{day}|{field}", q, format_number(value), field


def _l2_product_price(rng: random.Random, run: _Chain) -> _Drawn:
    product = rng.choice(_PRODUCTS)
    target = rng.choice([t for t in _TARGETS if t != apis.PRODUCTS[product][1]])
    q = _phrase(rng, f"How much does the {product} cost in {target}?", f"What is the price of the {product} in {target}?")
    item = run("lookup_product", name=product)
    rate = run("get_exchange_rate", base=item["currency"], target=target)["rate"]
    answer = run.calc(f"{_num(item['price'])} * {_num(rate)}")
    return f"product_price|{product}|{target}", q, answer, None


def _l2_salary(rng: random.Random, run: _Chain) -> _Drawn:
    name = rng.choice(_EMPLOYEES)
    currency = apis.find_employee(name)["currency"]
    target = rng.choice([t for t in _TARGETS if t != currency])
    q = f"What is the yearly salary of {name} in {target}?"
    person = run("find_employee", name=name)
    rate = run("get_exchange_rate", base=person["currency"], target=target)["rate"]
    answer = run.calc(f"{_num(person['salary'])} * {_num(rate)}")
    return f"salary|{name}|{target}", q, answer, None


def _l2_manager_salary(rng: random.Random, run: _Chain) -> _Drawn:
    name = rng.choice(_STAFF)
    q = _phrase(rng, f"What is the yearly salary of {name}'s manager, in the manager's own currency?",
                f"How much does the manager of {name}'s department earn per year, in the manager's salary currency?")
    dept = run("find_employee", name=name)["department"]
    manager = run("get_department", department=dept)["manager"]
    salary = run("find_employee", name=manager)["salary"]
    return f"manager_salary|{name}", q, format_number(salary), "salary"


# ---------------------------------------------------------------------------------------------
# Level 3: three or four calls
# ---------------------------------------------------------------------------------------------


def _l3_product_total(rng: random.Random, run: _Chain) -> _Drawn:
    product, qty = rng.choice(_PRODUCTS), rng.randint(2, 12)
    target = rng.choice([t for t in _TARGETS if t != apis.PRODUCTS[product][1]])
    q = f"How much do {qty} units of the {product} cost together, in {target}?"
    item = run("lookup_product", name=product)
    rate = run("get_exchange_rate", base=item["currency"], target=target)["rate"]
    answer = run.calc(f"{qty} * {_num(item['price'])} * {_num(rate)}")
    return f"product_total|{product}|{qty}|{target}", q, answer, None


def _l3_weather_fahrenheit(rng: random.Random, run: _Chain) -> _Drawn:
    name, day = rng.choice(_EMPLOYEES), rng.choice(apis.DAYS)
    field, what = rng.choice((("high_c", "high"), ("low_c", "low")))
    q = f"What is the forecast {what} temperature on {day} in the city where {name} works, in degrees Fahrenheit?"
    city = run("find_employee", name=name)["city"]
    celsius = run("get_weather", city=city, day=day)[field]
    value = run("convert_units", value=celsius, from_unit="C", to_unit="F")["value"]
    return f"weather_f|{name}|{day}|{field}", q, format_number(value), "value"


def _l3_time_difference(rng: random.Random, run: _Chain) -> _Drawn:
    a = rng.choice(_CITIES)
    b = rng.choice([c for c in _CITIES if apis.CITIES[c][3] != apis.CITIES[a][3]])
    q = f"How many hours ahead of {a} is {b}? (Use standard time; answer with a negative number if {b} is behind.)"
    off_a = run("get_city", city=a)["utc_offset"]
    off_b = run("get_city", city=b)["utc_offset"]
    answer = run.calc(f"({_num(off_b)}) - ({_num(off_a)})")
    return f"time_difference|{a}|{b}", q, answer, None


def _l3_shipping_weight(rng: random.Random, run: _Chain) -> _Drawn:
    product, qty = rng.choice(_PRODUCTS), rng.randint(2, 20)
    q = f"How many pounds do {qty} units of the {product} weigh together?"
    weight = run("lookup_product", name=product)["weight_kg"]
    total = float(run.calc(f"{qty} * {_num(weight)}"))
    total_arg: float | int = int(total) if total.is_integer() else total
    value = run("convert_units", value=total_arg, from_unit="kg", to_unit="lb")["value"]
    return f"shipping_weight|{product}|{qty}", q, format_number(value), "value"


def _l3_colleague_distance(rng: random.Random, run: _Chain) -> _Drawn:
    a = rng.choice(_EMPLOYEES)
    b = rng.choice([e for e in _EMPLOYEES if apis.EMPLOYEES[e][2] != apis.EMPLOYEES[a][2]])
    q = f"How far apart, in miles, are the cities where {a} and {b} work?"
    city_a = run("find_employee", name=a)["city"]
    city_b = run("find_employee", name=b)["city"]
    km = run("get_distance", city_a=city_a, city_b=city_b)["distance_km"]
    value = run("convert_units", value=km, from_unit="km", to_unit="mi")["value"]
    return f"colleague_distance|{a}|{b}", q, format_number(value), "value"


def _l3_origin_population(rng: random.Random, run: _Chain) -> _Drawn:
    product = rng.choice([p for p in _PRODUCTS if apis.PRODUCTS[p][4] in _CITIES_HIDING_COUNTRY])
    q = f"What is the population of the country where the {product} is made?"
    city = run("lookup_product", name=product)["made_in"]
    country = run("get_city", city=city)["country"]
    population = run("get_country", country=country)["population"]
    return f"origin_population|{product}", q, format_number(population), "population"


# ---------------------------------------------------------------------------------------------
# Level 4: four or five calls
# ---------------------------------------------------------------------------------------------


def _manager_of(run: _Chain, name: str) -> dict[str, Any]:
    dept = run("find_employee", name=name)["department"]
    manager = run("get_department", department=dept)["manager"]
    return run("find_employee", name=manager)


def _l4_manager_salary_converted(rng: random.Random, run: _Chain) -> _Drawn:
    name = rng.choice(_STAFF)
    manager = apis.DEPARTMENTS[apis.EMPLOYEES[name][0]][0]
    target = rng.choice([t for t in _TARGETS if t != apis.find_employee(manager)["currency"]])
    q = f"What is the yearly salary of {name}'s manager in {target}?"
    boss = _manager_of(run, name)
    rate = run("get_exchange_rate", base=boss["currency"], target=target)["rate"]
    answer = run.calc(f"{_num(boss['salary'])} * {_num(rate)}")
    return f"manager_salary_converted|{name}|{target}", q, answer, None


def _l4_manager_weather(rng: random.Random, run: _Chain) -> _Drawn:
    name, day = rng.choice(_STAFF), rng.choice(apis.DAYS)
    q = f"What is the forecast high temperature on {day}, in degrees Fahrenheit, in the city where {name}'s manager works?"
    boss = _manager_of(run, name)
    celsius = run("get_weather", city=boss["city"], day=day)["high_c"]
    value = run("convert_units", value=celsius, from_unit="C", to_unit="F")["value"]
    return f"manager_weather|{name}|{day}", q, format_number(value), "value"


def _l4_manager_distance(rng: random.Random, run: _Chain) -> _Drawn:
    def far_from_manager(e: str) -> bool:
        return apis.EMPLOYEES[apis.DEPARTMENTS[apis.EMPLOYEES[e][0]][0]][2] != apis.EMPLOYEES[e][2]

    name = rng.choice([e for e in _STAFF if far_from_manager(e)])
    q = f"How many miles apart are the cities where {name} and {name}'s manager work?"
    person = run("find_employee", name=name)
    manager = run("get_department", department=person["department"])["manager"]
    boss = run("find_employee", name=manager)
    km = run("get_distance", city_a=person["city"], city_b=boss["city"])["distance_km"]
    value = run("convert_units", value=km, from_unit="km", to_unit="mi")["value"]
    return f"manager_distance|{name}", q, format_number(value), "value"


def _l4_purchase(rng: random.Random, run: _Chain) -> _Drawn:
    name = rng.choice(_EMPLOYEES)
    currency = apis.find_employee(name)["currency"]
    product = rng.choice([p for p in _PRODUCTS if apis.PRODUCTS[p][1] != currency])
    qty = rng.randint(2, 6)
    q = f"{name} wants to buy {qty} units of the {product}. What do they cost in the currency {name} is paid in?"
    person = run("find_employee", name=name)
    item = run("lookup_product", name=product)
    rate = run("get_exchange_rate", base=item["currency"], target=person["currency"])["rate"]
    answer = run.calc(f"{qty} * {_num(item['price'])} * {_num(rate)}")
    return f"purchase|{name}|{product}|{qty}", q, answer, None


def _l4_local_price(rng: random.Random, run: _Chain) -> _Drawn:
    product = rng.choice(_PRODUCTS)
    currency = apis.PRODUCTS[product][1]
    city = rng.choice([c for c in _CITIES_HIDING_COUNTRY if apis.COUNTRIES[apis.CITIES[c][0]][1] != currency])
    q = f"What does the {product} cost in the local currency of {city}?"
    item = run("lookup_product", name=product)
    country = run("get_city", city=city)["country"]
    currency = run("get_country", country=country)["currency"]
    rate = run("get_exchange_rate", base=item["currency"], target=currency)["rate"]
    answer = run.calc(f"{_num(item['price'])} * {_num(rate)}")
    return f"local_price|{product}|{city}", q, answer, None


_TEMPLATES: dict[int, tuple[_Template, ...]] = {
    1: (_l1_floor, _l1_budget, _l1_city_population),
    2: (_l2_country_population, _l2_weather, _l2_product_price, _l2_salary, _l2_manager_salary),
    3: (_l3_product_total, _l3_weather_fahrenheit, _l3_time_difference, _l3_shipping_weight,
        _l3_colleague_distance, _l3_origin_population),
    4: (_l4_manager_salary_converted, _l4_manager_weather, _l4_manager_distance, _l4_purchase, _l4_local_price),
}

#: The tools the gold solutions of each level use (an env may offer just these).
LEVEL_TOOLS: dict[int, tuple[str, ...]] = {
    1: ("find_employee", "get_department", "get_city"),
    2: ("find_employee", "get_department", "get_city", "get_country", "get_weather", "get_exchange_rate",
        "lookup_product", "calculator"),
    3: ("find_employee", "get_city", "get_country", "get_distance", "get_weather", "get_exchange_rate",
        "lookup_product", "convert_units", "calculator"),
    4: ("find_employee", "get_department", "get_city", "get_country", "get_distance", "get_weather",
        "get_exchange_rate", "lookup_product", "convert_units", "calculator"),
}


def is_heldout(key: str) -> bool:
    """Whether a question key belongs to the held-out split (a pure function of the key)."""
    return zlib.crc32(key.encode("utf-8")) % _HELDOUT_MOD == 0


def _draw(split: str, level: int, index: int, attempt: int) -> tuple[_Drawn, tuple[ToolCall, ...], str]:
    seed = f"apichain:{split}:{level}:{index}" if attempt == 0 else f"apichain:{split}:{level}:{index}:{attempt}"
    rng = random.Random(seed)
    templates = _TEMPLATES[level]
    template = templates[rng.randrange(len(templates))]
    run = _Chain()
    drawn = template(rng, run)
    return drawn, tuple(run.calls), template.__name__[1:]


@functools.lru_cache(maxsize=16384)
def _task(split: str, level: int, index: int) -> Task:
    """Task ``index`` of ``split`` at ``level``: a pure function of its arguments."""
    heldout = split != "train"
    attempt = 0
    while True:
        (key, question, answer, field), calls, template = _draw(split, level, index, attempt)
        if is_heldout(key) == heldout:
            break
        attempt += 1
    return Task(
        id=f"apichain-{split}-L{level}-{index}",
        question=question,
        answer=answer,
        solution=calls,
        meta={"dataset": "apichain", "split": split, "level": level, "template": template,
              "num_calls": len(calls), "answer_field": field, "key": key},
    )


class APIChainTasks(TaskSet):
    """Multi-step API questions generated on the fly, deterministically; no files needed.

    With ``level=None`` the levels mix: task ``i`` has level ``1 + i % 4`` and is the very task
    ``i`` of that level's set.

    Args:
        split: ``"train"`` (10,000 tasks) or ``"test"`` (1,000; questions never seen in train).
        level: 1-4, or None to mix.
        size: Number of tasks, overriding the split's default.

    Example:
        >>> tasks = APIChainTasks("test", level=2)
        >>> tasks[0].id, tasks.index_of("apichain-test-L2-5")
        ('apichain-test-L2-0', 5)
    """

    def __init__(self, split: str = "train", level: int | None = None, size: int | None = None) -> None:
        check_choice("split", split, tuple(APICHAIN_SPLITS))
        if level is not None and (isinstance(level, bool) or level not in _LEVELS):
            raise ValueError(f"Expected level to be one of 1, 2, 3, 4 or None; got {level!r}")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"Expected size to be a positive int or None; got {size!r}")
        super().__init__("apichain" if level is None else f"apichain/L{level}", split)
        self.level = level
        self.size = APICHAIN_SPLITS[split] if size is None else size

    @property
    def tool_names(self) -> tuple[str, ...]:
        """The tools this set's gold solutions use."""
        levels = _LEVELS if self.level is None else (self.level,)
        return tuple(t for t in apis.API_TOOLS if any(t in LEVEL_TOOLS[lv] for lv in levels))

    def __len__(self) -> int:
        return self.size

    def level_of(self, index: int) -> int:
        """The level of task ``index``."""
        return self.level if self.level is not None else 1 + index % 4

    def _get(self, index: int) -> Task:
        return _task(self.split, self.level_of(index), index)

    def index_of(self, task_id: str) -> int:
        m = _ID_RE.fullmatch(task_id)
        if m is not None:
            index = int(m["index"])
            if m["split"] == self.split and index < self.size and int(m["level"]) == self.level_of(index):
                return index
        example = f"apichain-{self.split}-L{self.level_of(0)}-0"
        hint = ""
        if m is not None and int(m["index"]) < self.size:
            index = int(m["index"])
            hint = f" Did you mean 'apichain-{self.split}-L{self.level_of(index)}-{index}'?"
        raise KeyError(
            f"No task with id {task_id!r} in {self.name}/{self.split} ({self.size} tasks); ids look "
            f"like {example!r}.{hint}"
        )


@functools.lru_cache(maxsize=32)
def apichain_tasks(split: str = "train", level: int | None = None, size: int | None = None) -> APIChainTasks:
    """The (cached) :class:`APIChainTasks` of a split and level."""
    return APIChainTasks(split, level=level, size=size)
