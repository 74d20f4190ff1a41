"""STE's continual learning: APIs arrive in rounds, each round fine-tunes on its new APIs' data.

Round ``r`` continues from round ``r − 1``'s model and trains (with the ``bc`` agent) on the new
APIs' examples plus a *replay* sample of every earlier round's examples and, optionally, general
instruction data, so that learning new tools does not erase the old ones. ``replay=0`` (the CLI's
``--no-replay``) fine-tunes on the new data alone and shows the forgetting. After each round the
model is evaluated on the held-out tests of every API seen so far.

Run: ``toolenv ste continual --round r1.jsonl --round r2.jsonl --tests tests.jsonl --out runs/ste-cl``
(each round file is chat JSONL from ``toolenv ste build``; tests are :class:`~toolenv.datasets.ste.CallTest`
records, one JSON object per line).
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agents.config import usage_error
from toolenv.datasets.ste import CallTest

__all__ = ["ContinualConfig", "continual_learning", "main", "round_data"]

logger = logging.getLogger(__name__)

Example = dict[str, Any]


@dataclass
class ContinualConfig:
    """Sizes of a continual-learning run; each round is one ``bc`` run."""

    model: str = field(default="smollm2-135m", metadata={"help": "the model round 1 starts from"})
    out: str = field(default="runs/ste-continual", metadata={"help": "output directory: round{r}/model, metrics.json"})
    replay: float = field(default=0.1, metadata={"help": "share of each earlier round's examples replayed (0 = no replay)"})
    min_replay: int = field(default=1, metadata={"help": "with replay > 0: at least this many examples of each earlier API"})
    general_data: str | None = field(default=None, metadata={"help": "chat JSONL of general instruction data mixed into every round"})
    general_per_round: int = field(default=0, metadata={"help": "general examples added per round"})
    steps: int = field(default=30, metadata={"help": "bc optimiser steps per round"})
    batch_size: int = field(default=8, metadata={"help": "bc batch size"})
    lr: float = field(default=3e-4, metadata={"help": "bc learning rate (LoRA)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    seed: int = field(default=0, metadata={"help": "random seed (replay sampling and training)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.replay <= 1.0:
            raise ValueError(f"Expected replay in [0, 1], got {self.replay!r}.")
        for name in ("steps", "batch_size", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"Expected {name} >= 1, got {getattr(self, name)!r}.")
        for name in ("min_replay", "general_per_round"):
            if getattr(self, name) < 0:
                raise ValueError(f"Expected {name} >= 0, got {getattr(self, name)!r}.")
        if self.general_per_round and self.general_data is None:
            raise ValueError("Expected general_data (a chat JSONL file) when general_per_round > 0.")


def round_data(
    rounds: Sequence[Sequence[Example]],
    r: int,
    *,
    replay: float,
    min_replay: int = 1,
    general: Sequence[Example] = (),
    general_count: int = 0,
    rng: random.Random,
) -> list[Example]:
    """Round ``r``'s training set: its own examples, a replay sample of rounds ``< r``, general data.

    The replay sample takes ``ceil(replay × n)`` of the ``n`` examples of each earlier API (at
    least ``min_replay``, at most ``n``), so every old API keeps a voice however small its data.

    >>> rounds = [[{"api": "a", "i": i} for i in range(10)], [{"api": "b", "i": i} for i in range(4)]]
    >>> data = round_data(rounds, 1, replay=0.2, rng=random.Random(0))
    >>> sorted((e["api"], e["i"]) for e in data if e["api"] == "a").__len__(), sum(e["api"] == "b" for e in data)
    (2, 4)
    >>> len(round_data(rounds, 1, replay=0.0, rng=random.Random(0)))
    4
    """
    if not 0 <= r < len(rounds):
        raise ValueError(f"Expected a round index in [0, {len(rounds)}), got {r}.")
    data = list(rounds[r])
    if replay > 0:
        for earlier in rounds[:r]:
            by_api: dict[str, list[Example]] = {}
            for e in earlier:
                by_api.setdefault(str(e.get("api", "")), []).append(e)
            for examples in by_api.values():
                k = min(len(examples), max(min_replay, math.ceil(replay * len(examples))))
                data.extend(rng.sample(examples, k))
    if general_count:
        data.extend(rng.sample(list(general), min(general_count, len(general))))
    return data


def continual_learning(
    cfg: ContinualConfig,
    rounds: Sequence[Sequence[Example]],
    tests: Sequence[Sequence[CallTest]],
    *,
    evaluate: Callable[[str, Sequence[CallTest]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Fine-tune round after round; evaluate on the tests of every round so far after each.

    Args:
        cfg: Sizes and paths.
        rounds: Each round's chat examples (``toolenv ste build`` output), in arrival order.
        tests: Each round's held-out tests (the same length as ``rounds``).
        evaluate: ``f(model_dir, tests) -> {"metrics": {...}, "per_api": {...}}``; default: the
            first-action metrics of :func:`agents.ste.evaluate.evaluate_calls` with the model loaded locally.

    Returns:
        ``{"rounds": [{"round", "model", "train_examples", "seen": metrics on rounds <= r,
        "per_round": [metrics on round j's tests for j <= r]}, ...], "config": ...}``. Finished
        rounds are kept in ``{out}/round{r}`` and not repeated.
    """
    from agents import bc
    from agents.ste.exploit import read_jsonl, write_jsonl

    if len(rounds) != len(tests):
        raise ValueError(f"Expected one test set per round, got {len(rounds)} rounds and {len(tests)} test sets.")
    evaluate = evaluate or _evaluate_locally
    out = Path(cfg.out)
    rng = random.Random(cfg.seed)
    general = read_jsonl(cfg.general_data) if cfg.general_data else []
    model = cfg.model
    history: list[dict[str, Any]] = []
    for r in range(len(rounds)):
        # 1. this round's data: new APIs + replay of the old + general instructions
        data = round_data(rounds, r, replay=cfg.replay, min_replay=cfg.min_replay, general=general,
                          general_count=cfg.general_per_round, rng=rng)
        if not data:
            raise ValueError(f"Round {r + 1} has no training examples (exploration kept no trial for its APIs).")
        run = out / f"round{r + 1}"
        data_file = write_jsonl(run / "train.jsonl", data)
        model_dir = run / "model"
        # 2. fine-tune, continuing from the previous round's model
        if not (model_dir / "toolenv_policy.json").exists():
            logger.info("Round %d: %d examples (%d new), from %s", r + 1, len(data), len(rounds[r]), model)
            bc.train(bc.Config(model=model, data=str(data_file), out=str(model_dir), max_steps=cfg.steps, batch_size=cfg.batch_size,
                               lr=cfg.lr, lora_r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, seed=cfg.seed, device=cfg.device,
                               progress=cfg.progress, save_every=max(cfg.steps, 1)))
        model = str(model_dir)
        # 3. evaluate on every round seen so far, each on its own and all together
        metrics_file = run / "metrics.json"
        if metrics_file.exists():
            record = json.loads(metrics_file.read_text())
        else:
            outs = [evaluate(model, tests[j]) for j in range(r + 1)]  # each round's tests once
            per_round = [o["metrics"] for o in outs]
            record = {"round": r + 1, "model": model, "train_examples": len(data), "new_examples": len(rounds[r]),
                      "seen": _pooled(per_round), "per_api": {k: v for o in outs for k, v in o.get("per_api", {}).items()},
                      "per_round": per_round}
            metrics_file.write_text(json.dumps(record, indent=2))
        history.append(record)
        logger.info("Round %d: correct %.1f%% on all APIs seen so far", r + 1, record["seen"]["correct"])
    result = {"rounds": history, "config": asdict(cfg)}
    (out / "continual.json").write_text(json.dumps(result, indent=2))
    return result


def _pooled(metrics: Sequence[dict[str, float]]) -> dict[str, float]:
    """Percentages over several test sets, weighted by their sizes ``n``.

    >>> _pooled([{"correct": 50.0, "n": 2.0}, {"correct": 100.0, "n": 6.0}])
    {'correct': 87.5, 'n': 8.0}
    """
    n = sum(m.get("n", 0.0) for m in metrics)
    keys = [k for k in metrics[0] if k != "n"] if metrics else []
    pooled = {k: (sum(m[k] * m.get("n", 0.0) for m in metrics) / n if n else float("nan")) for k in keys}
    return {**pooled, "n": float(n)}


def _evaluate_locally(model_dir: str, tests: Sequence[CallTest]) -> dict[str, Any]:
    from agents.policy import Policy
    from agents.ste.chat import LocalChatModel
    from agents.ste.evaluate import evaluate_calls

    return evaluate_calls(LocalChatModel(Policy.load(model_dir)), tests)


def main(argv: Sequence[str] | None = None) -> int:
    """``toolenv ste continual --round FILE [--round FILE ...] --tests FILE [--tests FILE ...] [--no-replay]``."""
    import dataclasses

    from agents.config import config_parser
    from agents.ste.exploit import read_jsonl

    parser = config_parser(ContinualConfig, prog="toolenv ste continual")
    parser.add_argument("--round", action="append", required=True, dest="round_files", help="chat JSONL of one round (repeat, in order)")
    parser.add_argument("--tests", action="append", required=True, dest="test_files", help="CallTest JSONL of one round (repeat, in order)")
    parser.add_argument("--no-replay", action="store_true", help="train each round on its new data only (shows forgetting)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(ContinualConfig) if getattr(args, f.name) is not None}
    if args.no_replay:
        given["replay"] = 0.0
    try:
        cfg = ContinualConfig(**given)
    except ValueError as e:
        usage_error(parser, str(e))
    rounds = [read_jsonl(p) for p in args.round_files]
    tests = [[CallTest.from_dict(d) for d in read_jsonl(p)] for p in args.test_files]
    result = continual_learning(cfg, rounds, tests)
    for rec in result["rounds"]:
        cells = ", ".join(f"round {j + 1}: {m['correct']:.1f}%" for j, m in enumerate(rec["per_round"]))
        print(f"after round {rec['round']}: correct on all seen {rec['seen']['correct']:.1f}% ({cells})")
    return 0
