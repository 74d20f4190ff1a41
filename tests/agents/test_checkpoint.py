"""Checkpoints: safe to load, atomic to save, clear when damaged."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.bc import Config
from agents.utils import Checkpointer


def _setup(tmp_path: Path) -> tuple[Checkpointer, torch.nn.Module, torch.optim.Optimizer]:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    return Checkpointer(tmp_path, Config(out=str(tmp_path), progress=False)), model, opt


def test_round_trip_restores_params_optimizer_and_rngs(tmp_path: Path) -> None:
    ck, model, opt = _setup(tmp_path)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    ck.save(5, model, opt, run_name="r", episodes=8)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    weights = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.zero_()
    step, extra = Checkpointer(tmp_path, Config(out=str(tmp_path), progress=False)).load(model, opt)
    assert step == 5 and extra == {"run_name": "r", "episodes": 8}
    assert torch.equal(model.weight, weights)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


class _Planted:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("touch PLANTED",))


def test_a_planted_pickle_does_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ck, model, opt = _setup(tmp_path)
    ck.save(1, model, opt)
    monkeypatch.chdir(tmp_path)
    torch.save({"step": 1, "params": {}, "evil": _Planted()}, ck.dir / "state.pt")
    with pytest.raises(ValueError, match=r"checkpoint in .* is damaged or not a toolenv checkpoint"):
        ck.load(model, opt)
    assert not (tmp_path / "PLANTED").exists()


def test_a_damaged_checkpoint_names_its_folder(tmp_path: Path) -> None:
    ck, model, opt = _setup(tmp_path)
    ck.save(1, model, opt)
    data = (ck.dir / "state.pt").read_bytes()
    (ck.dir / "state.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=str(ck.dir)):
        ck.load(model, opt)


@pytest.mark.parametrize("crash_after", ["first_rename", "before_any_rename"])
def test_a_save_interrupted_between_renames_keeps_a_good_checkpoint(tmp_path: Path, crash_after: str) -> None:
    ck, model, opt = _setup(tmp_path)
    ck.save(1, model, opt)
    # what a kill leaves: the new checkpoint written aside, the old one moved or not yet
    ck2, model2, opt2 = _setup(tmp_path / "other")
    ck2.save(2, model2, opt2)
    os.replace(ck2.dir, ck.tmp)
    (ck.tmp / "config.json").write_text((ck.dir / "config.json").read_text())
    if crash_after == "first_rename":
        os.replace(ck.dir, ck.old)
    again = Checkpointer(tmp_path, Config(out=str(tmp_path), progress=False))
    assert again.exists()
    step, _ = again.load(model, opt)
    assert step == (2 if crash_after == "first_rename" else 1)


def test_a_full_disk_says_so_and_keeps_the_last_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ck, model, opt = _setup(tmp_path)
    ck.save(1, model, opt)

    def full(*args: object, **kwargs: object) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 128 vs 64")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=r"Could not write the checkpoint .* MB free .* previous checkpoint .* is intact"):
        ck.save(2, model, opt)
    monkeypatch.undo()
    assert ck.load(model, opt)[0] == 1 and not ck.tmp.exists()
