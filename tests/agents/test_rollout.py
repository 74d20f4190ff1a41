"""The shared rollout loop on a tiny random model: tokens, masks, reward positions, determinism, JSONL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch

import agents.rollout as agents_rollout
import toolenv  # noqa: F401
from agents.policy import Policy
from agents.rollout import (
    ChatFormat,
    GenerationSettings,
    HFGenerator,
    load_trajectories,
    rollout,
    save_trajectories,
    scripted_trajectory,
)


def make_envs(n: int, protocol: str = "trice") -> list[gym.Env]:
    return [gym.make("toolenv/Math-v0", protocol=protocol) for _ in range(n)]


def test_rollout_tokens_equal_generate(policy: Policy) -> None:
    """One greedy turn: the trajectory's action tokens are exactly what model.generate returns."""
    env = make_envs(1)[0]
    torch.manual_seed(0)
    [traj] = rollout(policy, [env], settings=GenerationSettings(max_new_tokens=12, greedy=True), max_turns=1, options=[{"index": 2}])
    prompt = traj.token_ids[: traj.prompt_length]
    out = policy.model.generate(
        input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=12, do_sample=False, eos_token_id=policy.eos_token_ids, pad_token_id=policy.tokenizer.pad_token_id,
    )
    expected = out[0, len(prompt) :].tolist()
    first_action = traj.token_ids[traj.prompt_length : traj.action_ends[0] + 1]
    eos = set(policy.eos_token_ids)
    cut = next((i + 1 for i, t in enumerate(expected) if t in eos), len(expected))
    assert first_action == expected[:cut]
    # recorded log-probs equal a teacher-forced forward pass
    with torch.no_grad():
        logits = policy.model(input_ids=torch.tensor([traj.token_ids[: traj.action_ends[0] + 1]])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    positions = range(traj.prompt_length, traj.action_ends[0] + 1)
    forward = [logp[p - 1, traj.token_ids[p]].item() for p in positions]
    assert traj.logprobs[traj.prompt_length : traj.action_ends[0] + 1] == pytest.approx(forward, abs=1e-4)


def test_two_turn_episode_masks_and_reward_positions(policy: Policy) -> None:
    """A scripted two-step episode: call then answer; masks cover exactly the model's tokens."""
    env = make_envs(1)[0]
    traj = scripted_trajectory(env, None, policy.tokenizer, options={"index": 0})
    fmt = ChatFormat(policy.tokenizer)
    actions = env.unwrapped.gold_actions()
    assert traj.actions == actions and traj.success and traj.terminated and len(traj.rewards) == 2
    assert traj.rewards == [0.0, 1.0]
    assert len(traj.token_ids) == len(traj.action_mask) == len(traj.logprobs)
    # each action's tokens sit right before its action_end, and are the only masked tokens
    spans = []
    start = traj.prompt_length
    for end, text in zip(traj.action_ends, actions):
        ids = fmt.action_ids(text)
        begin = end + 1 - len(ids)
        assert traj.token_ids[begin : end + 1] == ids
        spans.append((begin, end))
        assert begin >= start
        start = end + 1
    masked = [i for i, m in enumerate(traj.action_mask) if m]
    assert masked == [i for b, e in spans for i in range(b, e + 1)]
    # the observation between the two actions is the tool turn, carrying the calculator's output
    obs_text = policy.tokenizer.decode(traj.token_ids[spans[0][1] + 1 : spans[1][0]])
    assert obs_text.startswith("\n<|im_start|>tool\n") and obs_text.endswith("<|im_start|>assistant\n")
    assert traj.infos[0]["tool_outputs"][0] in obs_text
    # the whole sequence equals the chat template's rendering of the env's messages
    rendered = policy.tokenizer.apply_chat_template(env.unwrapped.messages, tokenize=False)
    assert policy.tokenizer.decode(traj.token_ids) == rendered.rstrip("\n")


def test_batch_rollout_drops_finished_envs_and_is_deterministic(policy: Policy) -> None:
    settings = GenerationSettings(max_new_tokens=8, temperature=1.0)

    def run() -> list:
        torch.manual_seed(123)
        return rollout(policy, make_envs(4), settings=settings, seeds=[1, 2, 3, 4])

    a, b = run(), run()
    assert [t.token_ids for t in a] == [t.token_ids for t in b]
    for t in a:
        assert t.terminated or t.truncated
        assert len(t.action_ends) == len(t.rewards) == len(t.infos) == len(t.actions)
        assert all(t.action_mask[e] == 1 for e in t.action_ends)
        assert len(t.rewards) <= gym.spec("toolenv/Math-v0").max_episode_steps


def test_group_rollouts_share_a_task(policy: Policy) -> None:
    trajs = rollout(policy, make_envs(3), settings=GenerationSettings(max_new_tokens=4), options=[{"index": 7}] * 3, max_turns=1)
    assert len({t.task["id"] for t in trajs}) == 1
    assert all(t.truncated or t.terminated for t in trajs)


def test_react_stop_string_and_vector_env(policy: Policy) -> None:
    venv = gym.make_vec("toolenv/Math-v0", num_envs=2, vectorization_mode="sync", protocol="react")
    trajs = rollout(policy, venv, settings=GenerationSettings(max_new_tokens=6), max_turns=2)
    assert len(trajs) == 2 and all(t.env_id == "toolenv/Math-v0" for t in trajs)


def test_cut_handles_stop_strings_when_pad_is_eos(policy: Policy) -> None:
    gen = HFGenerator(policy)
    tok = policy.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    stopped = tok.encode("Action: x\nObservation:", add_special_tokens=False)
    assert gen._cut(stopped + [eos, eos], ["\nObservation:"]) == stopped
    answered = tok.encode("Final Answer: 3", add_special_tokens=False)
    assert gen._cut(answered + [eos, eos], ["\nObservation:"]) == answered + [eos]


def test_trajectories_round_trip_jsonl(policy: Policy, tmp_path: Path) -> None:
    trajs = [scripted_trajectory(e, None, policy.tokenizer, options={"index": i}) for i, e in enumerate(make_envs(3, "json"))]
    path = save_trajectories(tmp_path / "t.jsonl", trajs)
    back = load_trajectories(path)
    assert [t.to_dict() for t in back] == [t.to_dict() for t in trajs]
    assert all(t.success for t in back)


def test_policy_save_and_load_round_trip(policy: Policy, tiny_model_dir: Path, tmp_path: Path) -> None:
    base = Policy.load(str(tiny_model_dir), device="cpu")
    assert not base.has_adapter
    from agents.policy import LoraSettings

    trained = Policy.load(str(tiny_model_dir), lora=LoraSettings(r=2, alpha=4), device="cpu")
    assert trained.has_adapter and trained.settings()["trainable_params"] < trained.settings()["params"]
    with torch.no_grad():
        for name, p in trained.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.01)
    out = trained.save(tmp_path / "saved")
    again = Policy.load(str(out), device="cpu")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(again.model(ids).logits, trained.model(ids).logits, atol=1e-5)
        with again.reference() as ref:
            assert torch.allclose(ref(ids).logits, base.model(ids).logits, atol=1e-5)
    frozen = Policy.load(str(out), device="cpu", trainable=False)  # inference: adapter folded in
    assert not frozen.has_adapter
    with torch.no_grad():
        assert torch.allclose(frozen.model(ids).logits, trained.model(ids).logits, atol=1e-5)


def test_merged_weights_equal_adapter_forward_and_restore_exactly(policy: Policy) -> None:
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        expected = policy.model(ids).logits
        with policy.merged_weights() as m:
            merged = m(ids).logits
    assert torch.allclose(merged, expected, atol=1e-5)
    for n, p in policy.model.named_parameters():
        assert torch.equal(p, before[n]), n


def test_training_from_a_saved_adapter_stacks_a_new_one_whose_reference_is_that_policy(tiny_model_dir: Path, tmp_path: Path) -> None:
    from agents.policy import LoraSettings

    first = Policy.load(str(tiny_model_dir), lora=LoraSettings(r=2, alpha=4), device="cpu")
    with torch.no_grad():
        for name, p in first.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    bc_dir = first.save(tmp_path / "bc")
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        bc_logits = first.model(ids).logits
    second = Policy.load(str(bc_dir), lora=LoraSettings(r=2, alpha=4), device="cpu")
    assert second.base_name == str(bc_dir.resolve())
    with torch.no_grad():
        for name, p in second.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
        with second.reference() as ref:  # the reference is the BC policy, not the original base
            assert torch.allclose(ref(ids).logits, bc_logits, atol=1e-5)
        rl_logits = second.model(ids).logits
    rl_dir = second.save(tmp_path / "rl")
    again = Policy.load(str(rl_dir), device="cpu", trainable=False)  # resolves rl -> bc -> base
    with torch.no_grad():
        assert torch.allclose(again.model(ids).logits, rl_logits, atol=1e-5)


def test_a_template_without_tool_calls_keeps_the_call_text(policy, caplog) -> None:  # type: ignore[no-untyped-def]
    """SmolLM2's template (like the tiny one) ignores ``tool_calls``: the json protocol's call turns
    would render empty. The call's text is kept in the turn instead, with one warning."""
    import logging

    import agents.rollout as r
    from agents.rollout import ChatFormat, chat_trajectory

    env = gym.make("toolenv/Math-v0", protocol="json")
    env.reset(options={"index": 0})
    for action in env.unwrapped.gold_actions():
        env.step(action)
    messages = env.unwrapped.messages
    call_turn = next(m for m in messages if m["role"] == "assistant" and m.get("tool_calls"))
    assert call_turn["content"] == ""  # OpenAI's layout: the call lives in tool_calls only
    fmt = ChatFormat(policy.tokenizer)
    assert not fmt.renders_tool_calls
    r._WARNED_NO_TOOL_CALLS = False
    with caplog.at_level(logging.WARNING, logger="agents.rollout"):
        text = fmt._render(messages, generation_prompt=False)
        fmt._render(messages, generation_prompt=False)
    assert sum("ignores assistant tool_calls" in rec.message for rec in caplog.records) == 1
    assert '<tool_call>\n{"name": "calculator"' in text
    assert "<|im_start|>assistant\n<|im_end|>" not in text  # no empty assistant turn
    traj = chat_trajectory(messages, policy.tokenizer)
    assert all(a.strip() for a in traj.actions) and traj.actions[0].startswith("<tool_call>")


# ------------------------------------------------------------------------ KV reuse across turns
class _TalkBack:
    """A multi-turn task: every reply without calls gets a new user turn (its length depends on the reply), never an end."""

    @staticmethod
    def make(index: int) -> gym.Env:
        from toolenv.core import ToolEnv
        from toolenv.datasets import ListTaskSet
        from toolenv.tools.calculator import calculator
        from toolenv.types import Task

        class TalkBack(ToolEnv):
            def _on_answer(self, answer: str) -> tuple[dict[str, float], bool, str]:
                obs = f"Not yet. You said {answer[: 3 + len(answer) % 11]!r}; go on."
                self.messages.append({"role": "user", "content": obs})
                return {}, False, obs

        questions = ["Add 2 and 3.", "What is seven times six, then minus four?", "Halve 10.", "Count to three, slowly, then stop."]
        tasks = ListTaskSet([Task(f"t-{i}", q, "1") for i, q in enumerate(questions)], name="talk", split="test")
        env = TalkBack(tasks, [calculator])
        env.reset(options={"index": index})
        return env


@pytest.mark.parametrize("greedy", [True, False])
def test_turns_continue_the_kv_cache_with_the_tokens_and_logprobs_of_reprefilling(policy: Policy, greedy: bool) -> None:
    """Five turns of four episodes (varying lengths, so padding sits between turns): reuse equals re-prefilling and prefills less."""
    settings = GenerationSettings(max_new_tokens=9, greedy=greedy)
    options = [{"index": i} for i in range(4)]
    runs = {}
    for reuse in (False, True):
        gen = HFGenerator(policy, reuse_cache=reuse)
        torch.manual_seed(3)
        runs[reuse] = (rollout(policy, [_TalkBack.make(i) for i in range(4)], settings=settings, options=options, max_turns=5,
                               generator=gen), gen.prefilled_tokens)
    (fresh, fresh_prefill), (reused, reused_prefill) = runs[False], runs[True]
    assert [len(t.actions) for t in reused] == [5] * 4
    for a, b in zip(fresh, reused):
        assert a.token_ids == b.token_ids and a.action_mask == b.action_mask
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
    assert reused_prefill < fresh_prefill / 2  # turns 2-5 ran only their new tokens


def test_a_weight_update_between_calls_prefills_afresh(policy: Policy) -> None:
    """The cache of one turn is never continued after the weights changed in place (an optimiser step), nor after release."""
    gen = HFGenerator(policy, reuse_cache=True)
    settings = GenerationSettings(max_new_tokens=6, greedy=True)
    prompt = ChatFormat(policy.tokenizer).prompt_ids([{"role": "user", "content": "Add 2 and 3."}])
    (ids, _), = gen.generate([prompt], settings, ())
    follow = prompt + ids + policy.tokenizer.encode(" more")
    before = gen.prefilled_tokens
    with torch.no_grad():
        next(p for p in policy.model.parameters() if p.requires_grad).add_(0.5)
    gen.generate([follow], settings, ())
    assert gen.prefilled_tokens - before == len(follow)  # all of it: the cached keys came from the old weights
    gen.generate([follow + [5]], settings, ())  # extends nothing kept (the last call's action is missing): afresh
    assert gen.prefilled_tokens - before == 2 * len(follow) + 1
    gen.release()
    assert gen._turn is None


@pytest.mark.parametrize("greedy", [True, False])
def test_a_prefix_every_prompt_shares_is_prefilled_once(policy: Policy, greedy: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """First turns of four tasks (one env's instructions, then each question) and of a group on one task: the same
    tokens and log-probs as prefilling every row in full, with the shared prefix run once."""
    settings = GenerationSettings(max_new_tokens=9, greedy=greedy)
    for indices in ([0, 1, 2, 3], [1, 1, 1, 1]):
        runs = {}
        for share in (False, True):
            gen = HFGenerator(policy, reuse_cache=True, min_shared_prefix=16 if share else 10**9)
            torch.manual_seed(5)
            runs[share] = (rollout(policy, [_TalkBack.make(i) for i in indices], settings=settings, options=[{"index": i} for i in indices],
                                   max_turns=1, generator=gen),
                           gen.prefilled_tokens)
        (full, full_prefill), (shared, shared_prefill) = runs[False], runs[True]
        prompts = [t.token_ids[: t.action_mask.index(1)] for t in full]
        common = 0
        while all(len(p) > common + 1 and p[common] == prompts[0][common] for p in prompts):
            common += 1
        assert common >= 16 and full_prefill == sum(map(len, prompts))
        assert shared_prefill == full_prefill - (len(prompts) - 1) * common
        for a, b in zip(full, shared):
            assert a.token_ids == b.token_ids
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
    # a model whose cache cannot be continued prefills every row in full, with the same episodes
    import agents.rollout

    monkeypatch.setattr(agents.rollout, "_extendable", lambda cache: False)
    gen = HFGenerator(policy, reuse_cache=True)
    torch.manual_seed(5)
    fallback = rollout(policy, [_TalkBack.make(i) for i in indices], settings=settings, options=[{"index": i} for i in indices],
                       max_turns=1, generator=gen)
    assert gen.prefilled_tokens == full_prefill and [t.token_ids for t in fallback] == [t.token_ids for t in full]


# ------------------------------------------------------------------------ rows leave the batch as they end
def _ending_often(policy: Policy) -> list[int]:
    """End-of-turn ids for the tiny random model: one token in seven, so rows end at scattered steps."""
    return sorted({*policy.eos_token_ids, *range(10, len(policy.tokenizer), 7)})


def _batch_sizes(policy: Policy) -> tuple[list[int], Any]:
    sizes: list[int] = []
    hook = policy.model.get_base_model().register_forward_pre_hook(lambda module, args, kwargs: sizes.append(kwargs["input_ids"].shape[0]),
                                                                 with_kwargs=True)
    return sizes, hook


def test_prefill_groups_split_rows_by_length_where_padding_costs_more_than_a_forward() -> None:
    from agents.rollout import _prefill_groups

    assert _prefill_groups([5, 100, 6, 98], overhead=10) == [[0, 2], [3, 1]]
    assert _prefill_groups([5, 100, 6, 98], overhead=1000) == [[0, 2, 3, 1]]
    assert _prefill_groups([7], overhead=0) == [[0]]
    groups = _prefill_groups([3, 9, 4, 30, 31, 8, 2, 60], overhead=5)
    assert sorted(i for g in groups for i in g) == list(range(8))
    cost = sum(len(g) * max([3, 9, 4, 30, 31, 8, 2, 60][i] for i in g) + 5 for g in groups)
    assert cost == min(cost, 8 * 60 + 5) and len(groups) > 1


@pytest.mark.parametrize("overhead", [0, 10**9])
def test_ended_rows_leave_the_batch_with_the_tokens_of_generate(policy: Policy, overhead: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight prompts of different lengths, greedy, prefilled in groups of one length or all at once: the same tokens as
    ``model.generate`` on the same batch (which runs every row to the longest), log-probs equal to a teacher-forced
    forward, while the batch shrinks as rows end."""
    monkeypatch.setattr(agents_rollout, "_PREFILL_OVERHEAD", overhead)
    fmt = ChatFormat(policy.tokenizer)
    prompts = [fmt.prompt_ids([{"role": "user", "content": "Add 2 and 3. " * (1 + i % 3) + str(i)}]) for i in range(8)]
    eos = _ending_often(policy)
    gen = HFGenerator(policy)
    gen.eos_ids = eos
    sizes, hook = _batch_sizes(policy)
    try:
        got = gen.generate(prompts, GenerationSettings(max_new_tokens=12, greedy=True), ())
    finally:
        hook.remove()
    prefill = len({len(p) for p in prompts}) if overhead == 0 else 1
    assert sum(sizes[:prefill]) == 8 and sizes[prefill] == 8 and min(sizes[prefill:]) < 8  # grouped prefill; then rows left
    ids, mask = agents_rollout._left_padded(prompts, policy.tokenizer.pad_token_id)
    out = policy.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, eos_token_id=eos,
                                pad_token_id=policy.tokenizer.pad_token_id)
    ends = []
    for i, (tokens, logprobs) in enumerate(got):
        expected = out[i, ids.shape[1] :].tolist()
        cut = next((k + 1 for k, t in enumerate(expected) if t in eos), len(expected))
        assert tokens == expected[:cut]
        ends.append(cut)
        with torch.no_grad():
            logits = policy.model(input_ids=torch.tensor([prompts[i] + tokens])).logits[0].float()
        forward = torch.log_softmax(logits, -1)[len(prompts[i]) - 1 : -1].gather(1, torch.tensor(tokens)[:, None]).squeeze(1)
        assert torch.allclose(torch.tensor(logprobs), forward, atol=1e-4)
    assert len(set(ends)) > 2  # rows ended at several different steps


@pytest.mark.parametrize("greedy", [True, False])
@pytest.mark.parametrize("overhead", [0, 10**9])
def test_turns_continue_the_cache_of_rows_that_left_the_batch(policy: Policy, greedy: bool, overhead: int,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Five turns of six episodes whose rows end at scattered steps: continuing the cache (put back together from the
    rows that left early, each turn's new tokens prefilled in groups of one length or all at once) gives the tokens and
    log-probs of re-prefilling every turn."""
    monkeypatch.setattr(agents_rollout, "_PREFILL_OVERHEAD", overhead)
    settings = GenerationSettings(max_new_tokens=9, greedy=greedy)
    options = [{"index": i % 4} for i in range(6)]
    runs = {}
    for reuse in (False, True):
        gen = HFGenerator(policy, reuse_cache=reuse)
        gen.eos_ids = _ending_often(policy)
        sizes, hook = _batch_sizes(policy)
        torch.manual_seed(3)
        try:
            trajs = rollout(policy, [_TalkBack.make(i % 4) for i in range(6)], settings=settings, options=options, max_turns=5, generator=gen)
        finally:
            hook.remove()
        runs[reuse] = trajs, gen.prefilled_tokens, sizes
    (fresh, fresh_prefill, _), (reused, reused_prefill, sizes) = runs[False], runs[True]
    assert [len(t.actions) for t in reused] == [5] * 6
    assert sorted(set(sizes)) != [6]  # rows left the batch
    for a, b in zip(fresh, reused):
        assert a.token_ids == b.token_ids and a.action_mask == b.action_mask
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
    assert reused_prefill < fresh_prefill / 2
