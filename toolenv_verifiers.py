"""The verifiers taskset package for toolenv: ``vf-eval toolenv_verifiers --env.taskset.env-id toolenv/Math-v0``.

verifiers finds a taskset by a top-level module name that exports one ``Taskset`` and one ``Env``
subclass; the code lives in :mod:`toolenv.integrations.verifiers`.
"""

from toolenv.integrations.verifiers import ToolEnvTaskset, ToolEnvVerifiersEnv

__all__ = ["ToolEnvTaskset", "ToolEnvVerifiersEnv"]
