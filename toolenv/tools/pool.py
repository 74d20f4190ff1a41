"""The API pool: every tool any toolenv env can offer, by name, with its documentation.

STE (Wang et al. 2024) explores one API at a time: the explorer reads the API's documentation,
imagines queries and calls the real tool. :func:`api_pool` turns short specs into
:class:`Api` records (name, JSON-schema doc, source) that can make fresh executable tools:

- ``"apichain"``: the nine APIs of :mod:`toolenv.tools.apis` (``"apichain:get_city"`` for one;
  ``"apichain:calculator"`` is the calculator);
- ``"calculator"``: the safe calculator of :mod:`toolenv.tools.calculator`;
- ``"bfcl"``: every function of the BFCL multi-turn API classes, with the JSON docs bfcl-eval
  ships for them (``"bfcl:GorillaFileSystem"`` for one class, ``"bfcl:GorillaFileSystem.ls"``
  for one function; needs the optional ``bfcl-eval`` package). Each tool runs on a fresh class
  instance loaded with a realistic default scenario (:func:`bfcl_default_config`);
- ``"pkg.module:function"`` or ``"path/to/file.py:function"`` (``:*`` for every public function
  the module defines): a user's own typed function with a Google-style docstring;
- a callable or a :class:`~toolenv.tools.Tool` directly.

Adding a custom tool is writing a function, as STE's custom-tool instructions promise::

    def word_count(text: str) -> int:
        '''Count the words of a text.

        Args:
            text: The text to count, e.g. "to be or not to be".
        '''
        return len(text.split())

    >>> pool = api_pool(["apichain:get_city", word_count])    # doctest: +SKIP

Example:
    >>> pool = api_pool(["apichain:get_city", "calculator"])
    >>> [(a.name, a.source) for a in pool]
    [('get_city', 'apichain'), ('calculator', 'calculator')]
    >>> pool[0].doc["parameters"]["required"]
    ['city']
    >>> pool[0].make_tool()(ToolCall("get_city", {"city": "Oslo"})).output[:35]
    '{"city": "Oslo", "country": "Norway'
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import inspect
import sys
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolenv.tools.base import DEFAULT_MAX_OUTPUT_CHARS, DEFAULT_TIMEOUT_S, Tool, did_you_mean
from toolenv.types import ToolCall  # noqa: F401  (used by the examples)

__all__ = [
    "APICHAIN_APIS",
    "POOL_SPECS",
    "Api",
    "api_pool",
    "bfcl_classes",
    "bfcl_default_config",
    "make_tools",
]

#: The spec words :func:`api_pool` knows besides ``"pkg.module:function"``.
POOL_SPECS: tuple[str, ...] = ("apichain", "calculator", "bfcl")

#: The APIChain APIs (``"apichain"``), in the order the APIChain env offers them.
APICHAIN_APIS: tuple[str, ...] = (
    "find_employee", "get_department", "get_city", "get_country", "get_distance", "get_weather",
    "get_exchange_rate", "lookup_product", "convert_units",
)


@dataclass(frozen=True)
class Api:
    """One explorable API: its name, its documentation and how to make it run.

    Attributes:
        name: The name the model calls, unique in a pool (``"get_city"``, ``"ls"``, ``"my_fn"``).
        doc: ``{"name", "description", "parameters"}`` with a JSON-schema ``parameters`` object
            (the OpenAI function shape without the ``{"type": "function"}`` wrapper).
        source: Where it comes from: ``"apichain"``, ``"calculator"``, ``"bfcl:<Class>"`` or
            ``"custom:<module>:<function>"``.
        returns: What a call returns, in words (from BFCL's response docs or a docstring's
            ``Returns:`` section); empty when undocumented.
        factory: Makes a fresh tool; BFCL APIs take the class instance to run on.
    """

    name: str
    doc: dict[str, Any]
    source: str
    returns: str = field(default="", compare=False)
    factory: Callable[..., Tool] | None = field(default=None, repr=False, compare=False)

    def __hash__(self) -> int:  # the doc is a dict; name and source identify an API
        return hash((self.name, self.source))

    @property
    def bfcl_class(self) -> str | None:
        """The BFCL API class of a BFCL function, else ``None``."""
        return self.source.split(":", 1)[1] if self.source.startswith("bfcl:") else None

    def make_tool(self, *, timeout: float = DEFAULT_TIMEOUT_S, max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS) -> Tool:
        """A fresh executable :class:`~toolenv.tools.Tool` for this API.

        BFCL functions get a new instance of their class loaded with :func:`bfcl_default_config`;
        to let several functions of one class share state, use :func:`make_tools`.
        """
        if self.factory is None:
            raise ValueError(f"Expected an Api made by api_pool() (with a factory), got {self!r}.")
        if self.bfcl_class is not None:
            return self.factory(_bfcl_instance(self.bfcl_class), timeout=timeout, max_output_chars=max_output_chars)
        return self.factory(timeout=timeout, max_output_chars=max_output_chars)

    def doc_text(self) -> str:
        """The documentation as the model reads it: name, description, parameters, returns.

        >>> print(api_pool(["calculator"])[0].doc_text())
        API: calculator
        Description: Evaluate an arithmetic expression and return its value.
        Parameters:
        - expression (string, required): An arithmetic expression, e.g. "(12/60)*50" or "2^10 - 1,000".
        """
        lines = [f"API: {self.name}", f"Description: {self.doc.get('description', '')}".rstrip()]
        params = self.doc.get("parameters", {})
        props: Mapping[str, Any] = params.get("properties", {})
        required = set(params.get("required", []))
        if props:
            lines.append("Parameters:")
            for key, schema in props.items():
                lines.append(f"- {key} ({_type_text(schema)}, {'required' if key in required else 'optional'})"
                             f"{_param_extra(schema)}")
        else:
            lines.append("Parameters: none")
        if self.returns:
            lines.append(f"Returns: {self.returns}")
        return "\n".join(lines)


def _type_text(schema: Mapping[str, Any]) -> str:
    kind = str(schema.get("type", "any"))
    items = schema.get("items")
    if kind == "array" and isinstance(items, Mapping) and items.get("type"):
        return f"array of {items['type']}"
    return kind


def _param_extra(schema: Mapping[str, Any]) -> str:
    out = ""
    if schema.get("description"):
        out += f": {' '.join(str(schema['description']).split())}"
    if "enum" in schema:
        out += f" One of {schema['enum']}."
    if "default" in schema:
        out += f" Default: {schema['default']!r}."
    return out


# ------------------------------------------------------------------------------------ functions
def _function_api(fn: Callable[..., Any], source: str, *, name: str | None = None,
                  description: str | None = None, isolate: bool = False) -> Api:
    tool = Tool(fn, name=name, description=description)
    return Api(tool.name, _doc_of(tool), source, _returns_of(fn), _FunctionTool(fn, tool.name, tool.description, isolate))


@dataclass(frozen=True)
class _FunctionTool:
    """Builds a function's :class:`Tool` with an env's limits (a class, not a closure, so envs pickle)."""

    fn: Callable[..., Any]
    name: str
    description: str
    isolate: bool = False

    def __call__(self, *, timeout: float, max_output_chars: int) -> Tool:
        return Tool(self.fn, name=self.name, description=self.description, timeout=timeout,
                    max_output_chars=max_output_chars, isolate=self.isolate)


@dataclass(frozen=True)
class _SameTool:
    """Hands out one Tool object (a subclass may hold state that cannot be rebuilt)."""

    tool: Tool

    def __call__(self, **_: Any) -> Tool:
        return self.tool


def _tool_api(tool: Tool) -> Api:
    if type(tool) is not Tool:
        return Api(tool.name, _doc_of(tool), f"custom:{tool.name}", "", _SameTool(tool))
    return _function_api(tool.fn, _custom_source(tool.fn), name=tool.name, description=tool.description,
                         isolate=tool.isolate)


def _doc_of(tool: Tool) -> dict[str, Any]:
    return {"name": tool.name, "description": tool.description, "parameters": copy.deepcopy(tool.parameters)}


def _returns_of(fn: Callable[..., Any]) -> str:
    """The ``Returns:`` section of a Google-style docstring, as one line."""
    lines = inspect.cleandoc(inspect.getdoc(fn) or "").splitlines()
    out: list[str] = []
    inside = False
    for line in lines:
        stripped = line.strip()
        if stripped.rstrip(":") in ("Returns", "Return") and stripped.endswith(":"):
            inside = True
            continue
        if inside:
            if stripped.endswith(":") and not line.startswith((" ", "\t")) and " " not in stripped:
                break  # the next section
            if stripped:
                out.append(stripped)
            elif out:
                break
    return " ".join(out)


def _custom_source(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", type(fn).__name__)
    return f"custom:{module}:{qualname}"


def _apichain_api(name: str) -> Api:
    from toolenv.tools.apis import API_TOOLS

    fn = API_TOOLS[name]
    return _function_api(fn, "calculator" if name == "calculator" else "apichain")


# ----------------------------------------------------------------------------------------- BFCL
@functools.cache
def bfcl_classes() -> tuple[str, ...]:
    """The BFCL multi-turn API classes (those of ``multi_turn_base``), in BFCL's order.

    Raises:
        BFCLNotInstalledError: ``bfcl-eval`` is not installed.
    """
    from toolenv.datasets.bfcl import _doc_file_mapping, load_bfcl_multi_turn

    used = {c for task in load_bfcl_multi_turn("base") for c in task.meta["involved_classes"]}
    return tuple(c for c in _doc_file_mapping() if c in used)


@functools.cache
def _default_configs() -> dict[str, dict[str, Any]]:
    from toolenv.datasets.bfcl import load_bfcl_multi_turn

    out: dict[str, dict[str, Any]] = {}
    for task in load_bfcl_multi_turn("base"):
        for class_name, config in task.meta["initial_config"].items():
            if config and class_name not in out:
                out[class_name] = config
    return out


def bfcl_default_config(class_name: str) -> dict[str, Any]:
    """The scenario a fresh instance of a BFCL class is loaded with: the ``initial_config`` of
    the first ``multi_turn_base`` entry that configures the class (``{}`` if none does).

    Returns a copy the caller may change.
    """
    return copy.deepcopy(_default_configs().get(class_name, {}))


def _bfcl_instance(class_name: str) -> Any:
    """A fresh instance of a BFCL class loaded with its default scenario, as BFCL's executor does."""
    from toolenv.envs.bfcl import _new_instances

    meta = {"involved_classes": [class_name], "initial_config": {class_name: bfcl_default_config(class_name)}}
    return _new_instances(meta)[class_name]


def _bfcl_doc(raw: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """A BFCL function doc as a JSON-schema doc, and its response doc in words."""
    from toolenv.envs.bfcl import _openapi_schema

    params = raw.get("parameters", {})
    parameters = {**_openapi_schema(params), "type": "object", "required": list(params.get("required", []))}
    parameters.setdefault("properties", {})
    doc = {"name": str(raw["name"]), "description": str(raw.get("description", "")), "parameters": parameters}
    response = raw.get("response", {})
    fields = response.get("properties", {}) if isinstance(response, Mapping) else {}
    returns = "; ".join(
        f"{k} ({_type_text(_openapi_schema(v))}): {' '.join(str(v.get('description', '')).split())}".rstrip(": ")
        for k, v in fields.items()
    )
    return doc, returns


def _bfcl_apis(class_name: str) -> list[Api]:
    from toolenv.datasets.bfcl import multi_turn_function_docs
    from toolenv.envs.bfcl import _signatures_of

    methods = _signatures_of(class_name)
    apis = []
    for raw in multi_turn_function_docs(class_name, hint=False):
        if raw["name"] not in methods:
            continue
        doc, returns = _bfcl_doc(raw)
        apis.append(Api(doc["name"], doc, f"bfcl:{class_name}", returns, _BFCLMethodTool(doc)))
    return apis


@dataclass(frozen=True)
class _BFCLMethodTool:
    """Builds the Tool of one BFCL method on an API instance (a class, not a closure, so envs pickle)."""

    doc: dict[str, Any]

    def __call__(self, instance: Any, *, timeout: float, max_output_chars: int) -> Tool:
        from toolenv.envs.bfcl import BFCLTool

        return BFCLTool(self.doc, getattr(instance, self.doc["name"]), timeout=timeout, max_output_chars=max_output_chars)


def _bfcl_spec(rest: str | None) -> list[Api]:
    classes = bfcl_classes()
    if rest is None:
        return [a for c in classes for a in _bfcl_apis(c)]
    class_name, _, function = rest.partition(".")
    if class_name not in classes:
        raise ValueError(f"Unknown BFCL class {class_name!r} in 'bfcl:{rest}': expected one of {list(classes)}."
                         f"{did_you_mean(class_name, classes)}")
    apis = _bfcl_apis(class_name)
    if not function:
        return apis
    by_name = {a.name: a for a in apis}
    if function not in by_name:
        raise ValueError(f"Unknown function {function!r} of BFCL class {class_name}: expected one of "
                         f"{list(by_name)}.{did_you_mean(function, by_name)}")
    return [by_name[function]]


# --------------------------------------------------------------------------------------- custom
def _load_module(target: str) -> Any:
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser()
        if not path.is_file():
            raise ValueError(f"Expected a Python file for the custom tool spec, got {target!r} (no such file).")
        name = f"toolenv_custom_{path.stem}_{zlib.crc32(str(path.resolve()).encode()):08x}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"Could not load {target!r} as a Python module.")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(target)
    except ImportError as e:
        raise ValueError(f"Expected an importable module in the custom tool spec, got {target!r} ({e}).") from e


def _custom_spec(spec: str) -> list[Api]:
    target, _, name = spec.rpartition(":")
    module = _load_module(target)
    source_module = target if not target.endswith(".py") else Path(target).stem
    if name == "*":
        fns = [fn for n, fn in vars(module).items()
               if inspect.isfunction(fn) and not n.startswith("_") and fn.__module__ == module.__name__]
        if not fns:
            raise ValueError(f"Expected public functions in {target!r} for {spec!r}, found none.")
        return [_function_api(fn, f"custom:{source_module}:{fn.__name__}") for fn in fns]
    obj = getattr(module, name, None)
    if obj is None:
        public = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise ValueError(f"Module {target!r} has no function {name!r}.{did_you_mean(name, public)}")
    if isinstance(obj, Tool):
        return [_tool_api(obj)]
    if not callable(obj):
        raise ValueError(f"Expected {spec!r} to name a function, got {type(obj).__name__}.")
    return [_function_api(obj, f"custom:{source_module}:{name}")]


# ----------------------------------------------------------------------------------------- pool
def _spec_apis(spec: str | Callable[..., Any] | Tool) -> list[Api]:
    if isinstance(spec, Tool):
        return [_tool_api(spec)]
    if callable(spec):
        return [_function_api(spec, _custom_source(spec))]
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"Expected a pool spec (a non-empty string, a function or a Tool), got {spec!r}.")
    spec = spec.strip()
    head, sep, rest = spec.partition(":")
    if head == "calculator" and not sep:
        return [_apichain_api("calculator")]
    if head == "apichain":
        if not sep:
            return [_apichain_api(n) for n in APICHAIN_APIS]
        known = (*APICHAIN_APIS, "calculator")
        if rest not in known:
            raise ValueError(f"Unknown APIChain API {rest!r} in {spec!r}: expected one of {list(known)}."
                             f"{did_you_mean(rest, known)}")
        return [_apichain_api(rest)]
    if head == "bfcl":
        return _bfcl_spec(rest if sep else None)
    if sep and rest:
        return _custom_spec(spec)
    raise ValueError(
        f"Unknown pool spec {spec!r}: expected 'apichain[:NAME]', 'calculator', 'bfcl[:Class[.function]]' "
        f"or 'pkg.module:function'.{did_you_mean(head, POOL_SPECS)}"
    )


def api_pool(specs: str | Sequence[str | Callable[..., Any] | Tool]) -> list[Api]:
    """The APIs named by ``specs``, in order, each once.

    Args:
        specs: Pool specs (see the module docstring): ``"apichain"``, ``"apichain:get_city"``,
            ``"calculator"``, ``"bfcl"``, ``"bfcl:GorillaFileSystem"``, ``"bfcl:GorillaFileSystem.ls"``,
            ``"pkg.module:function"``, ``"file.py:function"``, or functions and Tools themselves.
            A single string is one spec.

    Raises:
        ValueError: An unknown spec (with a "Did you mean ...?"), or two different APIs with one name.
        BFCLNotInstalledError: A ``bfcl`` spec without the ``bfcl-eval`` package.

    Example:
        >>> [a.name for a in api_pool("apichain")][:3]
        ['find_employee', 'get_department', 'get_city']
        >>> api_pool(["apichain:get_cty"])
        Traceback (most recent call last):
        ...
        ValueError: Unknown APIChain API 'get_cty' in 'apichain:get_cty': expected one of ['find_employee', 'get_department', 'get_city', 'get_country', 'get_distance', 'get_weather', 'get_exchange_rate', 'lookup_product', 'convert_units', 'calculator']. Did you mean 'get_city'?
    """
    if isinstance(specs, str) or callable(specs) or isinstance(specs, Tool):
        specs = [specs]  # type: ignore[list-item]
    pool: dict[str, Api] = {}
    for spec in specs:
        for api in _spec_apis(spec):
            old = pool.get(api.name)
            if old is None:
                pool[api.name] = api
            elif (old.source, old.doc) != (api.source, api.doc):
                raise ValueError(f"Expected unique API names in the pool, got {api.name!r} from {old.source!r} "
                                 f"and from {api.source!r}.")
    return list(pool.values())


def make_tools(apis: Sequence[Api], *, timeout: float = DEFAULT_TIMEOUT_S,
               max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS) -> list[Tool]:
    """Fresh tools for ``apis``; BFCL functions of one class share one fresh instance (and its state).

    Example:
        >>> tools = make_tools(api_pool(["apichain:get_country", "calculator"]))
        >>> tools[1](ToolCall("calculator", {"expression": "6*7"})).output
        '42'
    """
    instances: dict[str, Any] = {}
    tools = []
    for api in apis:
        if api.bfcl_class is not None and api.factory is not None:
            if api.bfcl_class not in instances:
                instances[api.bfcl_class] = _bfcl_instance(api.bfcl_class)
            tools.append(api.factory(instances[api.bfcl_class], timeout=timeout, max_output_chars=max_output_chars))
        else:
            tools.append(api.make_tool(timeout=timeout, max_output_chars=max_output_chars))
    return tools

