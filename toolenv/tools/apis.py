"""Small deterministic APIs for multi-step tool use: cities, countries, money, units, a company.

Every API is a pure function over tables embedded in this module: no files, no network, no
clock, so the same call gives the same answer in every process. The figures are illustrative
(populations, prices, salaries and exchange rates are fixed and only roughly realistic). Results
are JSON-able dicts; the model reads them as JSON. An unknown key (a city, product, employee,
currency, unit, day) raises :class:`UnknownKeyError` with a "Did you mean ...?" suggestion,
which the env shows the model as the call's error:

>>> get_city("paris")["country"]
'France'
>>> get_city("Pariss")
Traceback (most recent call last):
...
toolenv.tools.apis.UnknownKeyError: Unknown city 'Pariss'. Did you mean 'Paris'?

The APIs chain: ``find_employee`` gives a department and a city, ``get_department`` a manager
(an employee), ``get_city`` a country, ``get_country`` a currency, ``get_exchange_rate`` a
rate to multiply a price or salary by with the :func:`~toolenv.tools.calculator.calculator`.
"""

from __future__ import annotations

import difflib
import math
import random
from collections.abc import Callable, Mapping
from typing import Any

from toolenv.tools.calculator import calculator

__all__ = [
    "API_TOOLS",
    "CITIES",
    "COUNTRIES",
    "DAYS",
    "DEPARTMENTS",
    "EMPLOYEES",
    "PRODUCTS",
    "USD_PER_UNIT",
    "UnknownKeyError",
    "calculator",
    "convert_units",
    "find_employee",
    "get_city",
    "get_country",
    "get_department",
    "get_distance",
    "get_exchange_rate",
    "get_weather",
    "lookup_product",
]


class UnknownKeyError(KeyError, ValueError):
    """A lookup key the table does not hold. Both a ``KeyError`` and a ``ValueError``.

    Its text is the plain message (``KeyError`` would quote it), so the model reads
    ``Unknown city 'Pariss'. Did you mean 'Paris'?``.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------

#: city -> (country, population, IANA time zone, UTC offset in hours (standard time), latitude, longitude)
CITIES: Mapping[str, tuple[str, int, str, float, float, float]] = {
    "Paris": ("France", 2102650, "Europe/Paris", 1, 48.8566, 2.3522),
    "Lyon": ("France", 522250, "Europe/Paris", 1, 45.764, 4.8357),
    "Berlin": ("Germany", 3755251, "Europe/Berlin", 1, 52.52, 13.405),
    "Munich": ("Germany", 1512491, "Europe/Berlin", 1, 48.1351, 11.582),
    "Madrid": ("Spain", 3332035, "Europe/Madrid", 1, 40.4168, -3.7038),
    "Rome": ("Italy", 2748109, "Europe/Rome", 1, 41.9028, 12.4964),
    "London": ("United Kingdom", 8866180, "Europe/London", 0, 51.5074, -0.1278),
    "Zurich": ("Switzerland", 421878, "Europe/Zurich", 1, 47.3769, 8.5417),
    "Stockholm": ("Sweden", 984748, "Europe/Stockholm", 1, 59.3293, 18.0686),
    "Oslo": ("Norway", 709037, "Europe/Oslo", 1, 59.9139, 10.7522),
    "Tokyo": ("Japan", 13960236, "Asia/Tokyo", 9, 35.6762, 139.6503),
    "Osaka": ("Japan", 2753862, "Asia/Tokyo", 9, 34.6937, 135.5023),
    "Seoul": ("South Korea", 9411264, "Asia/Seoul", 9, 37.5665, 126.978),
    "Singapore": ("Singapore", 5917600, "Asia/Singapore", 8, 1.3521, 103.8198),
    "Mumbai": ("India", 12478447, "Asia/Kolkata", 5.5, 19.076, 72.8777),
    "Sydney": ("Australia", 5367206, "Australia/Sydney", 10, -33.8688, 151.2093),
    "New York": ("United States", 8258035, "America/New_York", -5, 40.7128, -74.006),
    "Chicago": ("United States", 2664452, "America/Chicago", -6, 41.8781, -87.6298),
    "Toronto": ("Canada", 2794356, "America/Toronto", -5, 43.6532, -79.3832),
    "Mexico City": ("Mexico", 9209944, "America/Mexico_City", -6, 19.4326, -99.1332),
    "Lima": ("Peru", 10151200, "America/Lima", -5, -12.0464, -77.0428),
    "Sao Paulo": ("Brazil", 11451245, "America/Sao_Paulo", -3, -23.5505, -46.6333),
    "Cairo": ("Egypt", 10230350, "Africa/Cairo", 2, 30.0444, 31.2357),
    "Nairobi": ("Kenya", 4397073, "Africa/Nairobi", 3, -1.2921, 36.8219),
}

#: country -> (capital, currency code, main language, population)
COUNTRIES: Mapping[str, tuple[str, str, str, int]] = {
    "France": ("Paris", "EUR", "French", 68170000),
    "Germany": ("Berlin", "EUR", "German", 84480000),
    "Spain": ("Madrid", "EUR", "Spanish", 48350000),
    "Italy": ("Rome", "EUR", "Italian", 58990000),
    "United Kingdom": ("London", "GBP", "English", 68350000),
    "Switzerland": ("Bern", "CHF", "German", 8850000),
    "Sweden": ("Stockholm", "SEK", "Swedish", 10550000),
    "Norway": ("Oslo", "NOK", "Norwegian", 5520000),
    "Japan": ("Tokyo", "JPY", "Japanese", 124500000),
    "South Korea": ("Seoul", "KRW", "Korean", 51710000),
    "Singapore": ("Singapore", "SGD", "English", 5920000),
    "India": ("New Delhi", "INR", "Hindi", 1428600000),
    "Australia": ("Canberra", "AUD", "English", 26640000),
    "United States": ("Washington", "USD", "English", 334900000),
    "Canada": ("Ottawa", "CAD", "English", 40100000),
    "Mexico": ("Mexico City", "MXN", "Spanish", 128500000),
    "Peru": ("Lima", "PEN", "Spanish", 34350000),
    "Brazil": ("Brasilia", "BRL", "Portuguese", 216400000),
    "Egypt": ("Cairo", "EGP", "Arabic", 112700000),
    "Kenya": ("Nairobi", "KES", "Swahili", 55100000),
}

#: currency code -> US dollars per unit (fixed illustrative rates)
USD_PER_UNIT: Mapping[str, float] = {
    "USD": 1.0,
    "EUR": 1.085,
    "GBP": 1.268,
    "CHF": 1.117,
    "SEK": 0.0952,
    "NOK": 0.0931,
    "JPY": 0.00668,
    "KRW": 0.000748,
    "SGD": 0.741,
    "INR": 0.01201,
    "AUD": 0.659,
    "CAD": 0.738,
    "MXN": 0.0586,
    "PEN": 0.268,
    "BRL": 0.201,
    "EGP": 0.0207,
    "KES": 0.00768,
}

#: product -> (price, currency, weight in kg, units in stock, city where it is made)
PRODUCTS: Mapping[str, tuple[float, str, float, int, str]] = {
    "Trail Backpack": (89.5, "USD", 1.2, 340, "Chicago"),
    "Desk Lamp": (39.99, "USD", 1.1, 410, "New York"),
    "Espresso Machine": (349.0, "EUR", 6.8, 57, "Rome"),
    "Leather Boots": (185.0, "EUR", 1.6, 64, "Madrid"),
    "Bread Maker": (129.0, "EUR", 5.4, 33, "Munich"),
    "Ceramic Teapot": (42.0, "GBP", 0.9, 88, "London"),
    "Road Bike": (2450.0, "CHF", 8.9, 12, "Zurich"),
    "Wool Sweater": (1290.0, "SEK", 0.6, 210, "Stockholm"),
    "Ski Jacket": (2790.0, "NOK", 1.3, 48, "Oslo"),
    "Wireless Headphones": (38900.0, "JPY", 0.25, 120, "Tokyo"),
    "Mechanical Keyboard": (159000.0, "KRW", 1.1, 75, "Seoul"),
    "Smartwatch": (249.0, "SGD", 0.08, 230, "Singapore"),
    "Cotton Saree": (4500.0, "INR", 0.7, 150, "Mumbai"),
    "Camping Tent": (329.0, "AUD", 4.3, 41, "Sydney"),
    "Standing Desk": (599.0, "CAD", 32.5, 19, "Toronto"),
    "Silver Necklace": (2890.0, "MXN", 0.05, 95, "Mexico City"),
    "Alpaca Scarf": (210.0, "PEN", 0.3, 130, "Lima"),
    "Coffee Beans": (89.9, "BRL", 1.0, 500, "Sao Paulo"),
}

#: department -> (manager, budget in USD, floor, headcount)
DEPARTMENTS: Mapping[str, tuple[str, int, int, int]] = {
    "Engineering": ("Amara Okafor", 4200000, 5, 48),
    "Sales": ("Lucas Moreau", 2750000, 2, 31),
    "Marketing": ("Yuki Tanaka", 1850000, 3, 17),
    "Finance": ("Sofia Rossi", 1300000, 4, 12),
    "Support": ("Diego Fernandez", 980000, 1, 26),
    "Research": ("Ingrid Larsen", 3100000, 6, 22),
}

#: employee -> (department, yearly salary in the currency of the city's country, city)
EMPLOYEES: Mapping[str, tuple[str, int, str]] = {
    "Amara Okafor": ("Engineering", 98000, "London"),
    "Lucas Moreau": ("Sales", 91000, "Paris"),
    "Yuki Tanaka": ("Marketing", 11800000, "Tokyo"),
    "Sofia Rossi": ("Finance", 87000, "Rome"),
    "Diego Fernandez": ("Support", 64000, "Madrid"),
    "Ingrid Larsen": ("Research", 1050000, "Oslo"),
    "Priya Sharma": ("Engineering", 3400000, "Mumbai"),
    "Noah Williams": ("Engineering", 132000, "Chicago"),
    "Mei Lin": ("Engineering", 118000, "Singapore"),
    "Jonas Becker": ("Engineering", 76000, "Berlin"),
    "Chloe Martin": ("Sales", 52000, "Lyon"),
    "Ethan Brown": ("Sales", 97000, "New York"),
    "Ana Souza": ("Sales", 186000, "Sao Paulo"),
    "Min-jun Kim": ("Sales", 68000000, "Seoul"),
    "Olivia Smith": ("Marketing", 112000, "Sydney"),
    "Mateo Garcia": ("Marketing", 720000, "Mexico City"),
    "Emma Johansson": ("Marketing", 610000, "Stockholm"),
    "Liam Walsh": ("Finance", 104000, "Toronto"),
    "Hannah Weber": ("Finance", 138000, "Zurich"),
    "Kenji Sato": ("Finance", 9200000, "Osaka"),
    "Fatima Hassan": ("Support", 540000, "Cairo"),
    "Grace Wanjiru": ("Support", 2900000, "Nairobi"),
    "Lucia Quispe": ("Support", 98000, "Lima"),
    "Felix Wagner": ("Research", 89000, "Munich"),
    "Nora Eriksen": ("Research", 640000, "Stockholm"),
    "Tom Clarke": ("Research", 71000, "London"),
}

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# unit name -> (quantity, factor to the base unit); temperatures are handled apart.
_UNITS: Mapping[str, tuple[str, float]] = {
    "m": ("length", 1.0),
    "km": ("length", 1000.0),
    "mi": ("length", 1609.344),
    "ft": ("length", 0.3048),
    "kg": ("mass", 1.0),
    "g": ("mass", 0.001),
    "lb": ("mass", 0.45359237),
    "oz": ("mass", 0.028349523125),
    "l": ("volume", 1.0),
    "gal": ("volume", 3.785411784),
    "C": ("temperature", 1.0),
    "F": ("temperature", 1.0),
    "K": ("temperature", 1.0),
}
_UNIT_ALIASES: Mapping[str, str] = {
    "meter": "m", "meters": "m", "metre": "m", "metres": "m",
    "kilometer": "km", "kilometers": "km", "kilometre": "km", "kilometres": "km",
    "mile": "mi", "miles": "mi", "foot": "ft", "feet": "ft",
    "kilogram": "kg", "kilograms": "kg", "kilo": "kg", "kilos": "kg",
    "gram": "g", "grams": "g", "pound": "lb", "pounds": "lb", "lbs": "lb",
    "ounce": "oz", "ounces": "oz", "liter": "l", "liters": "l", "litre": "l", "litres": "l",
    "gallon": "gal", "gallons": "gal",
    "c": "C", "celsius": "C", "°c": "C", "f": "F", "fahrenheit": "F", "°f": "F", "k": "K", "kelvin": "K",
}
_CONDITIONS = ("sunny", "partly cloudy", "cloudy", "light rain", "rain", "windy", "foggy")
_EARTH_RADIUS_KM = 6371.0


def _norm(text: str) -> str:
    return " ".join(str(text).split()).casefold()


def _index(table: Mapping[str, Any]) -> dict[str, str]:
    return {_norm(k): k for k in table}


_CITY_KEYS = _index(CITIES)
_COUNTRY_KEYS = _index(COUNTRIES)
_PRODUCT_KEYS = _index(PRODUCTS)
_EMPLOYEE_KEYS = _index(EMPLOYEES)
_DEPARTMENT_KEYS = _index(DEPARTMENTS)
_DAY_KEYS = {**_index(dict.fromkeys(DAYS)), **{d[:3].casefold(): d for d in DAYS}}
_CURRENCY_KEYS = _index(USD_PER_UNIT)


def _resolve(kind: str, value: Any, keys: Mapping[str, str]) -> str:
    """The table's spelling of ``value`` (case and spacing are ignored), or an :class:`UnknownKeyError`."""
    if not isinstance(value, str):
        raise UnknownKeyError(f"Expected a {kind} name as text, got {type(value).__name__} {value!r}.")
    key = keys.get(_norm(value))
    if key is not None:
        return key
    canonical = sorted(set(keys.values()))
    match = difflib.get_close_matches(_norm(value), list(keys), n=1, cutoff=0.6)
    if match:
        hint = f" Did you mean '{keys[match[0]]}'?"
    elif len(canonical) <= 20:
        hint = f" Known {kind} names: {', '.join(canonical)}."
    else:
        hint = ""
    raise UnknownKeyError(f"Unknown {kind} '{value}'.{hint}")


def _significant(x: float, digits: int = 5) -> float:
    """``x`` rounded to ``digits`` significant digits."""
    return float(f"{x:.{digits}g}")


# ---------------------------------------------------------------------------------------------
# The APIs
# ---------------------------------------------------------------------------------------------


def get_city(city: str) -> dict[str, Any]:
    """Look up a city: its country, population and time zone.

    Args:
        city: The city's English name, e.g. "Paris" or "New York".

    Returns:
        city, country, population, timezone and utc_offset (hours, standard time).

    Example:
        >>> get_city("Tokyo")
        {'city': 'Tokyo', 'country': 'Japan', 'population': 13960236, 'timezone': 'Asia/Tokyo', 'utc_offset': 9}
    """
    name = _resolve("city", city, _CITY_KEYS)
    country, population, timezone, offset, _, _ = CITIES[name]
    return {"city": name, "country": country, "population": population, "timezone": timezone, "utc_offset": offset}


def get_country(country: str) -> dict[str, Any]:
    """Look up a country: its capital, currency, language and population.

    Args:
        country: The country's English name, e.g. "Japan" or "United Kingdom".

    Example:
        >>> get_country("Japan")["currency"]
        'JPY'
    """
    name = _resolve("country", country, _COUNTRY_KEYS)
    capital, currency, language, population = COUNTRIES[name]
    return {"country": name, "capital": capital, "currency": currency, "language": language, "population": population}


def get_distance(city_a: str, city_b: str) -> dict[str, Any]:
    """Great-circle distance between two cities, in whole kilometers.

    Args:
        city_a: The first city's English name, e.g. "Paris".
        city_b: The second city's English name, e.g. "Berlin".

    Example:
        >>> get_distance("Paris", "Berlin")
        {'from': 'Paris', 'to': 'Berlin', 'distance_km': 877}
    """
    a = _resolve("city", city_a, _CITY_KEYS)
    b = _resolve("city", city_b, _CITY_KEYS)
    lat1, lon1 = (math.radians(v) for v in CITIES[a][4:6])
    lat2, lon2 = (math.radians(v) for v in CITIES[b][4:6])
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    km = 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))
    return {"from": a, "to": b, "distance_km": round(km)}


def get_weather(city: str, day: str) -> dict[str, Any]:
    """The weather forecast for a city on a day of the coming week.

    Args:
        city: The city's English name, e.g. "Paris".
        day: A day of the week, e.g. "Monday".

    Returns:
        city, day, condition, high_c and low_c (degrees Celsius) and rain_mm.

    Example:
        >>> get_weather("Oslo", "monday") == get_weather("oslo", "Mon")
        True
    """
    name = _resolve("city", city, _CITY_KEYS)
    weekday = _resolve("day", day, _DAY_KEYS)
    rng = random.Random(f"weather:{name}:{weekday}")  # str seeds do not depend on PYTHONHASHSEED
    lat = abs(CITIES[name][4])
    base = round(31 - 0.35 * lat)  # warmer near the equator
    high = base + rng.randint(-4, 4)
    low = high - rng.randint(4, 11)
    condition = rng.choice(_CONDITIONS)
    rain = round(rng.uniform(0.5, 18.0), 1) if "rain" in condition else 0.0
    return {"city": name, "day": weekday, "condition": condition, "high_c": high, "low_c": low, "rain_mm": rain}


def get_exchange_rate(base: str, target: str) -> dict[str, Any]:
    """The exchange rate from one currency to another: 1 base = rate target.

    Args:
        base: The ISO code of the currency to convert from, e.g. "EUR".
        target: The ISO code of the currency to convert to, e.g. "USD".

    Example:
        >>> get_exchange_rate("EUR", "USD")
        {'base': 'EUR', 'target': 'USD', 'rate': 1.085}
    """
    a = _resolve("currency", base, _CURRENCY_KEYS)
    b = _resolve("currency", target, _CURRENCY_KEYS)
    return {"base": a, "target": b, "rate": _significant(USD_PER_UNIT[a] / USD_PER_UNIT[b])}


def _unit(value: Any) -> str:
    if isinstance(value, str):
        if value.strip() in _UNITS:
            return value.strip()
        alias = _UNIT_ALIASES.get(_norm(value))
        if alias is not None:
            return alias
    keys = {**{u.casefold(): u for u in _UNITS}, **_UNIT_ALIASES}
    return _resolve("unit", value, keys)


def convert_units(value: float, from_unit: str, to_unit: str) -> dict[str, Any]:
    """Convert a quantity between units of length, mass, volume or temperature.

    Args:
        value: The number to convert, e.g. 12.5.
        from_unit: The unit of value: m, km, mi, ft, kg, g, lb, oz, l, gal, C, F or K.
        to_unit: The unit to convert to, of the same kind as from_unit.

    Returns:
        value (rounded to 4 decimals) and unit.

    Example:
        >>> convert_units(10, "km", "mi")
        {'value': 6.2137, 'unit': 'mi'}
        >>> convert_units(20, "C", "F")
        {'value': 68.0, 'unit': 'F'}
    """
    src, dst = _unit(from_unit), _unit(to_unit)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"Expected value to be a finite number, got {value!r}.")
    kind_src, kind_dst = _UNITS[src][0], _UNITS[dst][0]
    if kind_src != kind_dst:
        raise ValueError(f"Cannot convert {src} ({kind_src}) to {dst} ({kind_dst}).")
    if kind_src == "temperature":
        kelvin = {"C": value + 273.15, "F": (value - 32) * 5 / 9 + 273.15, "K": value}[src]
        out = {"C": kelvin - 273.15, "F": (kelvin - 273.15) * 9 / 5 + 32, "K": kelvin}[dst]
    else:
        out = value * _UNITS[src][1] / _UNITS[dst][1]
    return {"value": round(out, 4), "unit": dst}


def lookup_product(name: str) -> dict[str, Any]:
    """Look up a product in the shop's catalogue: price, currency, weight, stock and origin.

    Args:
        name: The product's name, e.g. "Trail Backpack".

    Example:
        >>> lookup_product("road bike")["price"]
        2450.0
    """
    key = _resolve("product", name, _PRODUCT_KEYS)
    price, currency, weight, stock, made_in = PRODUCTS[key]
    return {"name": key, "price": price, "currency": currency, "weight_kg": weight, "stock": stock, "made_in": made_in}


def find_employee(name: str) -> dict[str, Any]:
    """Find an employee of the company: id, department, yearly salary and city.

    Args:
        name: The employee's full name, e.g. "Mei Lin".

    Returns:
        employee_id, name, department, salary (yearly), currency (of the salary) and city.

    Example:
        >>> find_employee("Mei Lin")["department"]
        'Engineering'
    """
    key = _resolve("employee", name, _EMPLOYEE_KEYS)
    department, salary, city = EMPLOYEES[key]
    currency = COUNTRIES[CITIES[city][0]][1]
    employee_id = f"E{1001 + list(EMPLOYEES).index(key)}"
    return {"employee_id": employee_id, "name": key, "department": department, "salary": salary,
            "currency": currency, "city": city}


def get_department(department: str) -> dict[str, Any]:
    """Look up a department of the company: manager, budget, floor and headcount.

    Args:
        department: The department's name, e.g. "Sales".

    Returns:
        department, manager (an employee's name), budget (USD per year), floor and headcount.

    Example:
        >>> get_department("Sales")["manager"]
        'Lucas Moreau'
    """
    key = _resolve("department", department, _DEPARTMENT_KEYS)
    manager, budget, floor, headcount = DEPARTMENTS[key]
    return {"department": key, "manager": manager, "budget": budget, "floor": floor, "headcount": headcount}


#: Every API of this module plus the calculator, by name, in the order the env offers them.
API_TOOLS: Mapping[str, Callable[..., Any]] = {
    fn.__name__: fn
    for fn in (
        find_employee,
        get_department,
        get_city,
        get_country,
        get_distance,
        get_weather,
        get_exchange_rate,
        lookup_product,
        convert_units,
        calculator,
    )
}
for _fn in API_TOOLS.values():
    _fn.concurrent_safe = True  # type: ignore[attr-defined]  # deterministic lookups over fixed data: calls of one action may overlap
