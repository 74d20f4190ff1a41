"""Action protocols: how a model's text becomes tool calls or a final answer.

Each protocol is a small parser usable on its own::

    >>> from toolenv.protocols import make_protocol
    >>> make_protocol("trice").parse("calculator(2+3)", ["calculator"]).kind
    'call'
"""

from __future__ import annotations

from toolenv.protocols.base import Action, Protocol
from toolenv.protocols.json_calls import JsonProtocol
from toolenv.protocols.python_calls import PythonProtocol
from toolenv.protocols.react import ReactProtocol, json_between_braces
from toolenv.protocols.trice import TriceProtocol

__all__ = [
    "PROTOCOLS",
    "Action",
    "JsonProtocol",
    "Protocol",
    "PythonProtocol",
    "ReactProtocol",
    "TriceProtocol",
    "json_between_braces",
    "make_protocol",
]

PROTOCOLS: dict[str, type[Protocol]] = {
    "trice": TriceProtocol,
    "react": ReactProtocol,
    "json": JsonProtocol,
    "python": PythonProtocol,
}


def make_protocol(protocol: str | Protocol) -> Protocol:
    """A protocol instance from its name (``"trice"``, ``"react"``, ``"json"``, ``"python"``) or an instance."""
    if isinstance(protocol, Protocol):
        return protocol
    if protocol not in PROTOCOLS:
        from toolenv.tools.base import did_you_mean

        raise ValueError(
            f"Unknown protocol {protocol!r}: expected one of {sorted(PROTOCOLS)}.{did_you_mean(str(protocol), PROTOCOLS)}"
        )
    return PROTOCOLS[protocol]()
