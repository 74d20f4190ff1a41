"""Task sources: data-directory resolution, task sets, and the math datasets.

Data files are read from a data directory (``data_dir=...`` or ``$TOOLENV_DATA``), never
shipped with the package. :func:`math_tasks` is the one entry point the math envs use::

    >>> from toolenv.datasets import math_tasks
    >>> math_tasks("procedural", "test", level=3)[0].id
    'math-test-L3-0'
"""

from toolenv.datasets.base import (
    DATA_ENV_VAR,
    DataNotFoundError,
    ListTaskSet,
    TaskSet,
    require_file,
    resolve_data_dir,
)
from toolenv.datasets.math import (
    MATH_DATASETS,
    MAWPS_SUBSETS,
    ProceduralMath,
    load_asdiv,
    load_gsm8k,
    load_mawps,
    load_svamp,
    math_tasks,
)

__all__ = [
    "DATA_ENV_VAR",
    "MATH_DATASETS",
    "MAWPS_SUBSETS",
    "DataNotFoundError",
    "ListTaskSet",
    "ProceduralMath",
    "TaskSet",
    "load_asdiv",
    "load_gsm8k",
    "load_mawps",
    "load_svamp",
    "math_tasks",
    "require_file",
    "resolve_data_dir",
]
