"""toolenv in TRL: the environment_factory class (tools from the env's schemas, the same rewards as text), and GRPOTrainer on it."""

from __future__ import annotations

import inspect
from pathlib import Path

import gymnasium as gym
import pytest

import toolenv  # noqa: F401
from toolenv.integrations.trl import environment_factory, metrics_reward_func, reset_dataset


def test_the_class_offers_the_envs_tools_as_typed_documented_methods() -> None:
    from transformers.utils import get_json_schema

    cls = environment_factory("toolenv/APIChain-L1-v1")
    public = sorted(m for m, _ in inspect.getmembers(cls, predicate=inspect.isfunction) if not m.startswith("_"))
    env = gym.make("toolenv/APIChain-L1-v1")
    assert public == sorted([*(t["function"]["name"] for t in env.unwrapped.tool_schemas), "final_answer", "get_reward", "reset"])
    instance = cls()
    for tool in env.unwrapped.tool_schemas:  # what TRL shows the model is the env's own schema
        theirs = get_json_schema(getattr(instance, tool["function"]["name"]))["function"]
        ours = tool["function"]
        assert theirs["name"] == ours["name"] and theirs["description"] == ours["description"]
        assert set(theirs["parameters"]["properties"]) == set(ours["parameters"]["properties"])
        assert theirs["parameters"].get("required", []) == ours["parameters"].get("required", [])
    assert get_json_schema(instance.final_answer)["function"]["parameters"]["required"] == ["answer"]


def test_an_episode_through_the_class_equals_the_text_episode() -> None:
    cls = environment_factory("toolenv/APIChain-L1-v1")
    rollout = cls()
    prompt = rollout.reset(index=3, prompt=[{"role": "user", "content": ""}])
    text_env = gym.make("toolenv/APIChain-L1-v1")
    _, info = text_env.reset(options={"index": 3})
    assert prompt == info["prompt"]
    gold = text_env.unwrapped.tasks[3].solution
    rewards = []
    for call in gold:
        observation = getattr(rollout, call.name)(**call.arguments)
        text_obs, reward, *_ = text_env.step(text_env.unwrapped.protocol.format_call(call))
        assert observation == text_obs
        rewards.append(reward)
    assert rollout.final_answer(text_env.unwrapped.tasks[3].answer) == "Answer submitted."
    rewards.append(text_env.step(text_env.unwrapped.tasks[3].answer)[1])
    report = rollout._episode()
    assert report["rewards"] == pytest.approx(rewards) and rollout.get_reward() == pytest.approx(sum(rewards)) and report["success"]
    assert report["step_rewards"] == pytest.approx(text_env.unwrapped.end_info()["step_rewards"])  # the hindsight rewards travel too
    assert rollout.find_employee(name="x").startswith("The task is over")


def test_reset_dataset_rows() -> None:
    rows = reset_dataset("toolenv/Math-v0", episodes=3)
    assert rows["index"] == [0, 1, 2] and rows["prompt"][0] == [{"role": "user", "content": ""}]
    with pytest.raises(ValueError, match="Unknown env id"):
        environment_factory("toolenv/Mat-v0")


@pytest.mark.slow
def test_grpo_trainer_calls_the_envs_tools_and_is_rewarded_by_it(tmp_path: Path) -> None:
    """GRPOTrainer for two steps on a tiny model (Qwen2.5's chat template, so TRL parses its tool calls), taught one call first."""
    import torch

    pytest.importorskip("transformers", minversion="5.2", reason="GRPOTrainer's environment_factory needs transformers >= 5.2: pip install 'toolenv[trl]'")
    from trl import GRPOConfig, GRPOTrainer
    from trl.chat_template_utils import qwen2_5_chat_template

    from tests.agents.conftest import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    tok.chat_template = qwen2_5_chat_template
    model = tiny_model(len(tok))
    factory = environment_factory("toolenv/Math-v0", reward_weights={"call_succeeded": 1.0, "answer_correct": 1.0})
    probe = factory()
    question = probe.reset(index=0)
    prompt = tok.apply_chat_template([{"role": "user", "content": question}], tools=[probe.calculator, probe.final_answer],
                                     add_generation_prompt=True, tokenize=False)
    call = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "7*12"}}\n</tool_call><|im_end|>'
    ids = tok(prompt + call, return_tensors="pt").input_ids
    start = len(tok(prompt).input_ids)
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(120):  # memorise the call, so the sampled completions make it
        loss = torch.nn.functional.cross_entropy(model(ids).logits[0, start - 1 : -1], ids[0, start:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, num_generations=2, max_completion_length=48,
                      use_cpu=True, report_to=[], logging_steps=1, save_strategy="no", learning_rate=1e-4)
    trainer = GRPOTrainer(model=model, processing_class=tok, args=args, train_dataset=reset_dataset("toolenv/Math-v0", episodes=1).select([0] * 4),
                          environment_factory=factory, reward_funcs=[metrics_reward_func])
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logs) == 2
    for h in logs:
        assert h["tools/call_frequency"] > 0 and h["toolenv/num_tool_calls"] >= 1  # the env's tool ran
        assert h["rewards/ToolEnv_Math_v0/mean"] == pytest.approx(h["toolenv/call_succeeded"] + h["toolenv/answer_correct"])  # its reward
        assert h["toolenv/call_succeeded"] > 0
