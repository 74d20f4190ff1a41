"""``toolenv ste COMMAND [options]``: STE's steps from the command line.

Each command is a module's ``main(argv)``, imported only when it runs::

    toolenv ste explore --apis apichain:get_city calculator --model smollm2-135m --out ste/trials.jsonl
    toolenv ste filter ...      # rule checks and an optional judge
    toolenv ste paraphrase ...  # paraphrase kept queries up to a target count per API
    toolenv ste build ...       # the fine-tuning set of chat examples
    toolenv ste continual ...   # continual learning over rounds of APIs, with replay

``toolenv ste COMMAND --help`` lists a command's options.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "main"]

#: command -> (module, function taking argv, one-line description)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "explore": ("agents.ste.explore", "main", "imagine queries per API, try them against the real API, reflect (resumable)"),
    "filter": ("agents.ste.exploit", "filter_main", "keep trials that pass rule checks and an optional judge model"),
    "paraphrase": ("agents.ste.exploit", "paraphrase_main", "paraphrase kept queries up to a target number per API"),
    "build": ("agents.ste.exploit", "build_main", "write the fine-tuning set of chat examples (for toolenv train bc --data)"),
    "continual": ("agents.ste.continual", "main", "rounds of new APIs, fine-tuned with (or without) replay, evaluated on all seen"),
}


def usage() -> str:
    lines = ["usage: toolenv ste COMMAND [options]   (toolenv ste COMMAND --help lists its options)", "commands:"]
    lines += [f"  {name:<11} {text}" for name, (_, _, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``toolenv ste`` with ``argv`` (the arguments after ``ste``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        from toolenv.tools.base import did_you_mean

        print(f"error: unknown command 'toolenv ste {name}'.{did_you_mean(name, COMMANDS)} "
              f"Commands: {', '.join(COMMANDS)}.", file=sys.stderr)
        return 2
    module_name, function, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise SystemExit(f"error: 'toolenv ste {name}' is not available: module {module_name} is missing.") from None
    fn = getattr(module, function, None)
    if fn is None:
        raise SystemExit(f"error: 'toolenv ste {name}' is not available: {module_name} has no {function}(argv).")
    return int(fn(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
