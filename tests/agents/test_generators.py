"""The vLLM backends on CPU: the in-process engine against a fake ``vllm`` (weights pushed through collective_rpc into
toolenv's worker extension), and the OpenAI-compatible server backend against a local fake server, through real rollouts."""

from __future__ import annotations

import json
import sys
import types
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch

import toolenv  # noqa: F401
from agents.policy import LoraSettings, Policy
from agents.rollout import ChatFormat, GenerationSettings, OpenAIServerGenerator, rollout
from agents.vllm_worker import ToolenvWorkerExtension
from tests.agents.test_bc import OneTaskEnv  # noqa: F401
from tests.conftest import local_http_server


class _Logprob:
    def __init__(self, logprob: float) -> None:
        self.logprob = logprob


def _fake_vllm(engine_model: Any, script: list[int], calls: dict[str, Any]) -> types.ModuleType:
    """A ``vllm`` module whose LLM runs collective_rpc on a worker built from toolenv's extension and replies ``script``."""
    module = types.ModuleType("vllm")

    class Worker(ToolenvWorkerExtension):
        def __init__(self) -> None:
            self.model_runner = types.SimpleNamespace(model=engine_model)

    class LLM:
        def __init__(self, **kwargs: Any) -> None:
            calls["init"] = kwargs
            self.workers = [Worker()]
            calls["rpc"] = []

        def collective_rpc(self, method: str, args: tuple = ()) -> list[Any]:
            calls["rpc"].append((method, len(args[0])))
            return [getattr(w, method)(*args) for w in self.workers]

        def reset_prefix_cache(self) -> None:
            calls["reset"] = calls.get("reset", 0) + 1

        def generate(self, prompts: list[Any], params: Any, use_tqdm: bool = False) -> list[Any]:
            calls["params"], calls["prompts"] = params, [p["prompt_token_ids"] for p in prompts]
            out = types.SimpleNamespace(token_ids=list(script), logprobs=[{t: _Logprob(-0.5 - k)} for k, t in enumerate(script)])
            return [types.SimpleNamespace(outputs=[out]) for _ in prompts]

    module.LLM = LLM  # type: ignore[attr-defined]
    module.SamplingParams = lambda **kw: kw  # type: ignore[attr-defined]
    module.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}  # type: ignore[attr-defined]
    return module


def test_vllm_generator_pushes_merged_weights_through_collective_rpc(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agents.rollout import VLLMGenerator
    from tests.agents.conftest import tiny_model

    policy = Policy.load(str(tiny_model_dir), lora=LoraSettings(r=4, alpha=8), device="cpu")
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)  # an adapter that changes the merged weights
    engine_model = tiny_model(len(policy.tokenizer), seed=123)  # the engine starts from other weights

    def load_weights(weights: list[tuple[str, torch.Tensor]]) -> None:  # vLLM models load Hugging Face names
        params = dict(engine_model.named_parameters())
        for name, tensor in weights:
            if name in params:
                params[name].data.copy_(tensor)

    engine_model.load_weights = load_weights
    calls: dict[str, Any] = {}
    script = ChatFormat(policy.tokenizer).action_ids("calculator(6*7)")
    monkeypatch.setitem(sys.modules, "vllm", _fake_vllm(engine_model, script, calls))
    generator = VLLMGenerator(policy, sync_bucket_mb=1)
    assert calls["init"]["worker_extension_cls"] == "agents.vllm_worker.ToolenvWorkerExtension"
    assert calls["rpc"] and all(method == "toolenv_load_weights" for method, _ in calls["rpc"]) and calls["reset"] == 1
    with policy.merged_weights() as merged:
        expected = {n.removeprefix("base_model.model.").replace(".base_layer", ""): t for n, t in merged.state_dict().items() if "lora_" not in n}
    for name, p in engine_model.named_parameters():
        assert torch.equal(p, expected[name]), name  # the engine holds the policy's merged weights
    # a rollout through it: the sampled tokens and their log-probs land in the trajectory
    [traj] = rollout(policy, [gym.make("test/OneTask-v0")], settings=GenerationSettings(max_new_tokens=8), generator=generator, max_turns=1)
    assert calls["params"]["stop_token_ids"] == policy.eos_token_ids and calls["params"]["logprobs"] == 0
    assert traj.actions == ["calculator(6*7)"]
    assert [lp for lp, m in zip(traj.logprobs, traj.action_mask) if m] == pytest.approx([-0.5 - k for k in range(len(script))])


class _FakeServer(BaseHTTPRequestHandler):
    """``/v1/completions`` as vLLM answers with ``return_tokens_as_token_ids``: scripted tokens for each request."""

    script: list[int] = []
    requests: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        reply = {"choices": [{"text": "", "logprobs": {"tokens": [f"token_id:{t}" for t in self.script],
                                                        "token_logprobs": [-0.25 * (k + 1) for k in range(len(self.script))]}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_server_generator_sends_token_ids_and_keeps_the_servers_tokens(policy: Policy) -> None:
    _FakeServer.script = ChatFormat(policy.tokenizer).action_ids("calculator(6*7)")
    _FakeServer.requests = []
    with local_http_server(_FakeServer) as url:
        generator = OpenAIServerGenerator(url, "served-model", policy)
        envs = [gym.make("test/OneTask-v0") for _ in range(2)]
        trajs = rollout(policy, envs, settings=GenerationSettings(max_new_tokens=8, temperature=0.7), generator=generator, max_turns=1)
    assert len(_FakeServer.requests) == 2
    for request, traj in zip(_FakeServer.requests, trajs):
        assert request["prompt"] == traj.token_ids[: traj.prompt_length]  # the prompt went as token ids
        assert request["return_tokens_as_token_ids"] and request["logprobs"] == 0 and request["temperature"] == 0.7
        assert request["stop_token_ids"] == policy.eos_token_ids
        model_tokens = [t for t, m in zip(traj.token_ids, traj.action_mask) if m]
        assert model_tokens == _FakeServer.script and traj.actions == ["calculator(6*7)"]
        assert [lp for lp, m in zip(traj.logprobs, traj.action_mask) if m] == pytest.approx([-0.25 * (k + 1) for k in range(len(model_tokens))])
    with pytest.raises(RuntimeError, match="no way to receive weights"):
        generator.sync_weights()
