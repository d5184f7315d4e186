"""ΔBelief-RL on 20 Questions (Auzina et al., arXiv 2602.12342; docs/algorithms.md "ΔBelief-RL and the 20-Questions
task"): the rule oracle, the seeded splits, the transcript the verifier replays, the environment tokens against the
chat template, episodes (scripted and on the tiny model), the loss mask on environment tokens, ΔBelief's turn rewards
by hand on a position-lookup LM, the config checks, and two training steps with an in-run evaluation."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from doubles import CharTok, PosLM, config_error, make_batch

from drox.rewards import delta_belief as db
from drox.rewards.base import ScoringContext
from drox.rollout.base import RolloutBatch, concat_batches
from drox.rollout.multiturn import ReplyTokens, play_episodes
from drox.tasks import TaskError, build_task
from drox.tasks import twenty_questions as tq
from drox.tasks.episodes import transcript_text, transcript_turns

# ------------------------------------------------------------------------------------------------ the oracle


@pytest.mark.parametrize("secret, question, answer", [
    ("whale", "Is it a mammal?", tq.YES),
    ("whale", "Does it live in the water?", tq.YES),
    ("whale", "Is it bigger than a person?", tq.YES),
    ("whale", "Can it fly?", tq.NO),
    ("whale", "Is it a pet?", tq.NO),
    ("whale", "Are they animals?", tq.YES),  # plural keyword
    ("whale", "Is it a dolphin?", tq.NO),  # another item named
    ("whale", "Is it a whale?", tq.SOLVED),
    ("whale", "  is it a\nWHALE ?", tq.SOLVED),  # case and whitespace
    ("whale", "Is it 'whale'?", tq.SOLVED),  # ΔBelief's elicitation, asked as a question
    ("whale", "Is it a whale or a shark?", tq.INVALID),  # two names
    ("whale", "Is it a mammal that can swim?", tq.INVALID),  # two attributes
    ("whale", "What is it?", tq.INVALID),  # no keyword
    ("whale", "Is it a fish?", tq.INVALID),  # 'fish' is no keyword, and no item ('goldfish' is one word)
    ("dog", "Is it bigger than a person?", tq.NO),
    ("dog", "Is it a big animal?", tq.INVALID),  # 'big' and 'animal'
    ("airplane", "Is it a plane?", tq.SOLVED),  # an item's other name
    ("train", "Does it have wheels?", tq.YES),
    ("train", "Is it electric?", tq.YES),
    ("pizza", "Can you eat it?", tq.YES),
    ("chair", "Can you eat it?", tq.NO),
])
def test_oracle_answers(secret, question, answer):
    reply = tq.oracle(secret, question)
    assert reply.text == answer
    assert reply.done == reply.solved == (answer == tq.SOLVED)


def test_keywords_match_whole_words_and_names_never_collide_with_attributes():
    assert tq.asked_attributes("Is it bigger than a person?") == ["big"]  # not 'big' inside 'bigger'
    assert tq.asked_attributes("Is it a great meal?") == []  # 'eat' inside 'great', 'meal' is no 'mammal'
    assert tq.asked_attributes("Does it live in the sea?") == ["water"]
    assert tq.asked_attributes("Is it a seal?") == []  # 'sea' inside 'seal'
    assert [i.name for i in tq.named_items("a telephone, not a phone")] == ["phone"]
    assert len(tq.CATALOGUE) == 24 and len({i.name for i in tq.CATALOGUE}) == 24
    for item in tq.CATALOGUE:
        for name in item.names:
            assert tq.asked_attributes(f"Is it a {name}?") == [], name
            assert tq.named_items(f"Is it a {name}?") == [item], name
        assert item.attributes <= set(tq.ATTRIBUTES)
    for words in tq.ATTRIBUTES.values():
        for word in words:
            assert tq.named_items(f"Is it {word}?") == [], word
    with pytest.raises(TaskError, match="unknown secret 'unicorn'"):
        tq.oracle("unicorn", "Is it a pet?")


# ------------------------------------------------------------------------------------------------ the task


def _task(split="train", **kw):
    from drox.config import TaskConfig

    cfg = TaskConfig(name="twenty_questions", n_train=kw.pop("n_train", 60), n_test=kw.pop("n_test", 20),
                     prompt_suffix="", **kw)
    return build_task(cfg, split)


def test_splits_are_seeded_and_disjoint_in_candidate_sets():
    train, test = _task("train"), _task("test")
    assert train.dataset.column_names == ["problem_id", "prompt", "answer", "candidates"]
    assert train.dataset.to_list() == _task("train").dataset.to_list()  # deterministic
    assert _task("train", seed=1).dataset["prompt"] != train.dataset["prompt"]
    train_sets = {tuple(r["candidates"]) for r in train.dataset}
    test_sets = {tuple(r["candidates"]) for r in test.dataset}
    assert len(test_sets) == 20 and not train_sets & test_sets
    row = test.dataset[0]
    assert row["problem_id"] == "twenty_questions-test-0" and row["answer"] in row["candidates"]
    assert len(row["candidates"]) == 6 and row["candidates"] == sorted(row["candidates"])
    assert ", ".join(row["candidates"]) in row["prompt"] and "bigger than a person" in row["prompt"]
    assert len(_task("test", n_candidates=3).dataset[0]["candidates"]) == 3
    assert isinstance(test.env, tq.TwentyQuestionsEnv) and test.env.reset(row) == row["answer"]
    with pytest.raises(TaskError, match=r"task.n_candidates must be in 2..24 \(got 1\)"):
        _task(n_candidates=1)


def test_verifier_replays_the_transcript_and_a_turn_cannot_forge_a_reply():
    rows = [{"answer": "cat"}] * 3
    solved = transcript_text([("Is it a pet?", "Yes"), ("Is it a dog?", "No"), ("Is it a cat?", tq.SOLVED)])
    assert solved == ("Q1: Is it a pet?\nA1: Yes\nQ2: Is it a dog?\nA2: No\nQ3: Is it a cat?\nA3: "
                      "Correct! You found it.")
    # a turn that writes a fake reply stays on its own line: the verifier replays it as the environment heard it,
    # one (attribute) question
    forged = transcript_text([("Is it big?\nA1: Correct! You found it.", tq.NO)])
    assert transcript_turns(forged) == ["Is it big? A1: Correct! You found it."]
    result = tq.TwentyQuestionsVerifier()([solved, forged, "Is it a cat?"], rows)
    assert result.correct == [True, False, False]  # the last is no transcript: no turns
    assert result.extracted == ["cat", None, None]


# ------------------------------------------------------------------------------------------------ episodes


def _eos(model, tok):
    from drox.rollout.hf import eos_token_ids

    return eos_token_ids(model, tok)


def test_environment_tokens_are_the_chat_templates_reply_turn(tiny_policy):
    """prompt + a turn ending in EOS + the environment tokens decodes (and tokenises) exactly as the chat template
    renders [user, assistant, user] with the generation prompt; a turn cut at the cap gets the closing token too."""
    model, tok = tiny_policy
    fmt = ReplyTokens(tok, _eos(model, tok))
    user, turn, reply = "Let's play.", "Is it a dog?", "No"
    close = tok.convert_tokens_to_ids(fmt.close)
    assert fmt.close == "<|im_end|>" and close in _eos(model, tok)
    prompt = tok(tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    ids = prompt + tok(turn, add_special_tokens=False)["input_ids"] + [close] + fmt.tokens(reply, close, True)
    expected = tok.apply_chat_template([{"role": "user", "content": user}, {"role": "assistant", "content": turn},
                                        {"role": "user", "content": reply}], tokenize=False, add_generation_prompt=True)
    assert tok.decode(ids, skip_special_tokens=False) == expected
    assert ids == tok(expected, add_special_tokens=False)["input_ids"]
    assert tok.decode(fmt.tokens(reply, close, True)) == "\n<|im_start|>user\nNo<|im_end|>\n<|im_start|>assistant\n"
    cut = fmt.tokens(reply, 42, False)  # a turn cut at the cap: the environment closes the assistant message
    assert tok.decode(cut) == "<|im_end|>\n<|im_start|>user\nNo<|im_end|>\n<|im_start|>assistant\n"


class ScriptedEngine:
    """Answers every turn with the script's text for that turn (EOS-terminated, or cut without it), log-prob -0.5
    per token; records the prefixes it was given."""

    def __init__(self, tok, model_cfg, eos, script):
        from drox.rollout.hf import encode_prompts

        self.tok, self.script, self.calls = tok, script, []
        self.eos_ids, self.pad_id = torch.tensor(eos), tok.pad_token_id
        self.encode_prompts = lambda prompts: encode_prompts(tok, model_cfg, prompts)
        self.close = tok.convert_tokens_to_ids("<|im_end|>")

    def generate_ids(self, prefixes, group_size, *, max_new_tokens, temperature, top_p, seed):
        text, cut = self.script[len(self.calls)]
        self.calls.append([list(p) for p in prefixes])
        ids = self.tok(text, add_special_tokens=False)["input_ids"] + ([] if cut else [self.close])
        n, T = len(prefixes), len(ids)
        return RolloutBatch(prompt_ids=torch.zeros(n, 1, dtype=torch.long), prompt_mask=torch.ones(n, 1),
                            response_ids=torch.tensor([ids] * n), response_mask=torch.ones(n, T),
                            logprobs=torch.full((n, T), -0.5), entropies=torch.full((n, T), 0.25),
                            finish_reason=["length" if cut else "eos"] * n, texts=[text] * n, group_size=1)


def test_scripted_episodes_stop_when_solved_and_continue_the_exact_prefix(tiny_policy, tiny_cfg):
    model, tok = tiny_policy
    rows = [{"prompt": "Guess mine.", "answer": "dog"}, {"prompt": "Guess again.", "answer": "cat"}]
    script = [("Is it a dog?", False), ("Is it", True), ("Is it a pet?", False)]
    engine = ScriptedEngine(tok, tiny_cfg.model, _eos(model, tok), script)
    out = play_episodes(engine, tok, tq.TwentyQuestionsEnv(), rows, 1, max_turns=3, turn_tokens=8, seed=0)
    b = out.batch
    assert [len(c) for c in engine.calls] == [2, 1, 1]  # the dog episode was solved at turn 1
    assert out.solved == [True, False] and b.finish_reason == ["eos", "length"]  # the cat episode had a cut turn
    assert out.turns[1] == [("Is it a dog?", tq.NO), ("Is it", tq.INVALID), ("Is it a pet?", tq.YES)]
    assert b.texts[0] == "Q1: Is it a dog?\nA1: Correct! You found it."
    assert tq.TwentyQuestionsVerifier()(b.texts, rows).correct == [True, False]
    # the cat episode decodes as the chat template renders the conversation (a cut turn closed by the environment)
    messages = [{"role": "user", "content": "Guess again."}]
    for turn, reply in out.turns[1]:
        messages += [{"role": "assistant", "content": turn}, {"role": "user", "content": reply}]
    full = torch.cat([b.prompt_ids[1][b.prompt_mask[1].bool()], b.response_ids[1][b.response_mask[1].bool()]])
    assert tok.decode(full, skip_special_tokens=False) == tok.apply_chat_template(messages, tokenize=False,
                                                                                  add_generation_prompt=True)
    # each turn continued the exact token prefix so far: the prompt, then every earlier turn and reply
    length = int(b.response_mask[1].sum())
    prompt = b.prompt_ids[1][b.prompt_mask[1].bool()].tolist()
    starts = db.belief_points(b.action_mask, b.response_mask, b.turn_ends)[1]  # 0 and each reply's end
    assert [engine.calls[0][1], engine.calls[1][0], engine.calls[2][0]] == [
        prompt + b.response_ids[1, :s].tolist() for s in starts[:3]]
    assert starts[3] == length
    # action mask: 1 on the scripted turns only; behaviour log-probs / entropies there, 0 on environment tokens
    action = b.action_mask[1, :length]
    turn_lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) + (0 if cut else 1) for t, cut in script]
    assert int(action.sum()) == sum(turn_lengths) and b.turn_ends[1][0] == turn_lengths[0] - 1
    assert all(action[e] == 1 and action[e + 1] == 0 for e in b.turn_ends[1])
    assert torch.equal(b.logprobs[1, :length], -0.5 * action) and torch.equal(b.entropies[1, :length], 0.25 * action)
    assert out.tokens_generated == int(b.policy_mask.sum()) == turn_lengths[0] + sum(turn_lengths)


def test_episode_on_tiny_model_masks_exactly_the_oracle_tokens_and_its_logprobs_are_the_policys(tiny_policy,
                                                                                                   tiny_cfg):
    """A random tiny Llama plays 2 x 2 episodes of <= 3 turns: the action mask is 0 exactly on the tokens of the
    oracle's replies (as ReplyTokens formats them), and the behaviour log-probs and entropies equal a teacher-forced
    pass of the whole transcript within 1e-4 on the policy's tokens (0 on the environment's)."""
    from drox.models.forward import response_logprobs
    from drox.rollout.hf import HFRolloutEngine

    model, tok = tiny_policy
    engine = HFRolloutEngine(model, tok, tiny_cfg.model, batch_size=16)
    rows = _task("test", n_test=2).dataset.to_list()
    out = play_episodes(engine, tok, tq.TwentyQuestionsEnv(), rows, 2, max_turns=3, turn_tokens=6, seed=5)
    b, fmt = out.batch, ReplyTokens(tok, _eos(model, tok))
    assert b.num_rows == 4 and b.group_size == 2 and b.prompts == [r["prompt"] for r in rows]
    for n in range(4):
        length = int(b.response_mask[n].sum())
        ids, action = b.response_ids[n, :length].tolist(), b.action_mask[n, :length].tolist()
        expected, start = [], 0  # rebuild the row's mask from its turns and the oracle's replies
        for (turn, reply), end in zip(out.turns[n], b.turn_ends[n]):
            assert turn == tok.decode(ids[start:end + 1], skip_special_tokens=True)
            assert reply == tq.oracle(rows[n // 2]["answer"], turn).text
            env = fmt.tokens(reply, ids[end], finished=ids[end] in _eos(model, tok))
            assert ids[end + 1:end + 1 + len(env)] == env
            expected += [1.0] * (end + 1 - start) + [0.0] * len(env)
            start = end + 1 + len(env)
        assert action == expected and start == length and 1 <= len(out.turns[n]) <= 3
        assert b.texts[n] == transcript_text(out.turns[n])
    assert b.action_mask[b.response_mask == 0].sum() == 0
    with torch.no_grad():
        lp, ent = response_logprobs(model, b.prompt_ids, b.prompt_mask, b.response_ids, b.response_mask,
                                    temperature=1.0, with_entropy=True)
    policy = b.policy_mask
    assert ((lp - b.logprobs) * policy).abs().max() < 1e-4 and ((ent - b.entropies) * policy).abs().max() < 1e-4
    assert torch.equal(b.logprobs * (1 - policy), torch.zeros_like(lp))
    assert out.tokens_generated == int(policy.sum())


def test_select_groups_and_concat_carry_the_action_mask_and_turn_ends():
    tok = CharTok()
    b = make_batch(tok, ["p", "q"], ["ab", "abc", "a", "abcd"], 2)
    b.action_mask = torch.tensor([[1.0, 0, 0, 0], [1, 0, 1, 0], [1, 0, 0, 0], [1, 1, 0, 1]])
    b.turn_ends = [[0], [0, 2], [0], [1, 3]]
    sub = b.select_groups(torch.tensor([False, True]))
    assert torch.equal(sub.action_mask, b.action_mask[2:]) and sub.turn_ends == [[0], [1, 3]]
    flat = make_batch(tok, ["r"], ["abcde", "a"], 2)  # a single-turn batch: every response token is the policy's
    both = concat_batches([sub, flat], pad_id=0)
    assert both.action_mask.tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 1, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert both.turn_ends is None and concat_batches([sub, sub], 0).turn_ends == [[0], [1, 3], [0], [1, 3]]
    assert concat_batches([flat, flat], 0).action_mask is None


# ------------------------------------------------------------------------------------------------ the loss mask


def test_environment_tokens_get_no_gradient(compose_cfg):
    """loss_masks keeps only the policy's tokens (also for the 80/20 entropy filter), so changing the advantages on
    environment tokens leaves the loss unchanged and their log-probs get zero gradient."""
    from drox.pipeline import build_pipeline
    from drox.trainers import algos
    from drox.trainers.loop import Collected, loss_masks

    cfg = compose_cfg("+filter=entropy", "filter.entropy.rho=0.5")
    b = make_batch(CharTok(), ["p"], ["abcd", "abcd"], 2,
                   entropies=torch.tensor([[1.0, 9.0, 9.0, 2.0], [3.0, 9.0, 4.0, 9.0]]))
    b.action_mask = torch.tensor([[1.0, 0, 0, 1], [1, 0, 1, 0]])  # the high-entropy tokens are the environment's
    b.turn_ends = [[0, 3], [0, 2]]
    data = Collected(batch=b, rows=[{}], scores=torch.zeros(1, 2), token=None, token_mask=None,
                     table=torch.zeros(1, 2, 1), weights=torch.ones(1), names=["outcome"],
                     valid=torch.ones(1, 2, dtype=torch.bool))
    mask, pg_mask = loss_masks(build_pipeline(cfg), cfg, data, {})
    assert torch.equal(mask, b.action_mask)
    assert torch.equal(pg_mask, torch.tensor([[0.0, 0, 0, 0], [1, 0, 1, 0]]))  # the top half of the 4 policy tokens
    logprobs = torch.full((2, 4), -1.0, requires_grad=True)
    adv = torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8]])
    loss, _ = algos.policy_loss(logprobs, torch.full((2, 4), -1.05), adv, mask)
    loss.backward()
    moved = adv + 100.0 * (1 - b.action_mask)
    assert algos.policy_loss(logprobs.detach(), torch.full((2, 4), -1.05), moved, mask)[0].item() == loss.item()
    assert torch.equal(logprobs.grad * (1 - b.action_mask), torch.zeros(2, 4))
    assert (logprobs.grad * b.action_mask).abs().sum() > 0


# ------------------------------------------------------------------------------------------------ ΔBelief by hand

V = 128


def _row(p_a):
    p = torch.full((V,), (1.0 - p_a) / (V - 1))
    p[ord("a")] = p_a
    return p.log()


# a position-lookup LM: the logits at input position q give p('a') = (q + 1) / 100
TABLE = torch.stack([_row((q + 1) / 100) for q in range(40)])


def _episode_ctx(reference=None):
    """Prompt "p" (1 token), G = 2, secret "a". Row 0: turn 1 "xy", reply "N", turn 2 "z", reply "YY"; row 1: turn
    1 "w", reply "QQ". Beliefs are read after response lengths 0, 3, 6 (row 0) and 0, 3 (row 1)."""
    b = make_batch(CharTok(), ["p"], ["xyNzYY", "wQQ"], 2)
    b.action_mask = torch.tensor([[1.0, 1, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0]])
    b.turn_ends = [[1, 3], [0]]
    return ScoringContext(batch=b, rows=[{"prompt": "p", "answer": "a"}], task=SimpleNamespace(name="twenty_questions"),
                          policy=PosLM(TABLE), tokenizer=CharTok(), reference=reference)


def test_delta_belief_turn_rewards_by_hand():
    """The elicitation "a" after a history of L tokens is predicted at position L - 1: b = log(L / 100), L = 1 + the
    response length read. Row 0: b = log .01, log .04, log .07 -> r_1 = ln 4 at token 1, r_2 = ln(7/4) at token 3;
    row 1: b = log .01, log .04 -> r_1 = ln 4 at token 0. Σ_t r_t = b_T - b_0 = ln 7 and ln 4."""
    ctx = _episode_ctx()
    assert db.belief_points(ctx.batch.action_mask, ctx.batch.response_mask, ctx.batch.turn_ends) == [[0, 3, 6], [0, 3]]
    cfg = db.DeltaBeliefConfig(elicitation="{secret}")
    out = db.delta_belief(ctx, cfg)
    ln4, ln74 = math.log(4), math.log(7 / 4)
    expected = torch.tensor([[0.0, ln4, 0, ln74, 0, 0], [ln4, 0, 0, 0, 0, 0]])
    torch.testing.assert_close(out.token[0], expected, atol=1e-5, rtol=0)
    assert out.token_mask[0].tolist() == [[False, True, False, True, False, False], [True] + [False] * 5]
    assert out.seq.tolist() == [[0.0, 0.0]]  # dense: the gain is in the token rewards only
    d = out.diagnostics
    assert d["b0_mean"] == pytest.approx(math.log(0.01), abs=1e-5)
    assert d["bT_mean"] == pytest.approx((math.log(0.07) + math.log(0.04)) / 2, abs=1e-5)
    assert d["turn_reward_mean"] == pytest.approx((2 * ln4 + ln74) / 3, abs=1e-5)
    assert d["gain_mean"] == pytest.approx((math.log(7) + ln4) / 2, abs=1e-5)
    assert ctx.counters["forward_passes"] == 1 and ctx.counters["forward_tokens"] == (1 + 4 + 7 + 1 + 4) + 5
    summed = db.delta_belief(_episode_ctx(), db.DeltaBeliefConfig(elicitation="{secret}", dense=False))
    assert summed.token is None
    torch.testing.assert_close(summed.seq, torch.tensor([[math.log(7), ln4]]), atol=1e-5, rtol=0)
    clipped = db.delta_belief(_episode_ctx(), db.DeltaBeliefConfig(elicitation="{secret}", clip=1.0))
    torch.testing.assert_close(clipped.token[0][:, :4], torch.tensor([[0.0, 1, 0, ln74], [1, 0, 0, 0]]), atol=1e-5,
                               rtol=0)
    # the frozen initial policy's belief (p('a') = 0.3 everywhere): constant, so every r_t = 0
    initial = db.delta_belief(_episode_ctx(reference=lambda: PosLM(torch.stack([_row(0.3)] * 40))),
                              db.DeltaBeliefConfig(elicitation="{secret}", model="initial"))
    assert initial.token.abs().max() < 1e-6 and initial.diagnostics["b0_mean"] == pytest.approx(math.log(0.3))


def test_belief_reads_the_secrets_tokens_only_and_aggregates_them():
    ids, span = db.elicitation_tokens(CharTok(), "Is it '{secret}'?", "dog")
    assert CharTok().decode(ids) == "Is it 'dog'?" and span == (7, 9)
    assert db.elicitation_tokens(CharTok(), "{{x}} {secret}", "ab")[1] == (4, 5)  # literal braces before it
    lp = torch.tensor([[-1.0, -2.0, -3.0, -4.0]])
    secret = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    assert db.aggregate_beliefs(lp, secret, "sum").tolist() == [-5.0]
    assert db.aggregate_beliefs(lp, secret, "mean").tolist() == [-2.5]
    # on the position-lookup LM, secret "aa" after "p": positions 0 and 1 predict it: ln .01 + ln .02 (sum)
    ctx = _episode_ctx()
    out = db.delta_belief(ctx, db.DeltaBeliefConfig(elicitation="{secret}", aggregate="mean", dense=False))
    ctx2 = _episode_ctx()
    ctx2.rows = [{"prompt": "p", "answer": "aa"}]
    two = db.delta_belief(ctx2, db.DeltaBeliefConfig(elicitation="{secret}", dense=False))
    assert two.diagnostics["b0_mean"] == pytest.approx(math.log(0.01) + math.log(0.02), abs=1e-5)
    assert out.diagnostics["b0_mean"] == pytest.approx(math.log(0.01), abs=1e-5)  # one token: mean = sum
    with pytest.raises(ValueError, match="contain \\{secret\\} once"):
        db.DeltaBeliefConfig(elicitation="Is it?")


def test_delta_belief_without_turns_is_one_line():
    ctx = _episode_ctx()
    ctx.batch.turn_ends = None
    with pytest.raises(ValueError, match="reward.delta_belief needs multi-turn episodes with turn boundaries"):
        db.delta_belief(ctx, db.DeltaBeliefConfig())


# ------------------------------------------------------------------------------------------------ config


def _error(capsys, overrides):
    return config_error(capsys, overrides)


def test_config_errors_are_one_line(capsys):
    err = _error(capsys, ["model=tiny", "task=twenty_questions", "rollout.backend=vllm"])
    assert err == ("error: task=twenty_questions plays multi-turn episodes by continuing token prefixes "
                   "(generate_ids), which rollout.backend=vllm cannot; use rollout.backend=hf")
    err = _error(capsys, ["model=tiny", "task=twenty_questions", "rollout.tree.enabled=true"])
    assert "rollout.tree.enabled=true cannot branch; set rollout.tree.enabled=false" in err
    err = _error(capsys, ["model=tiny", "task=twenty_questions", "model.chat_template=false"])
    assert "set model.chat_template=true" in err
    err = _error(capsys, ["model=tiny", "+reward=delta_belief"])
    assert err == ("error: reward.delta_belief reads beliefs about a secret after each turn of a multi-turn "
                   "episode; task=arithmetic has none: use task=twenty_questions")
    err = _error(capsys, ["model=tiny", "task=twenty_questions", "rollout.multiturn.max_turns=0"])
    assert "rollout.multiturn.max_turns=0 must be a positive integer" in err


def test_multiturn_tasks_are_the_ones_with_an_environment():
    from drox.components import multiturn_tasks
    from drox.config import TaskConfig

    assert _task("test").env is not None and multiturn_tasks() == ("twenty_questions",)
    assert build_task(TaskConfig(name="arithmetic", n_train=4, n_test=2), "test").env is None


# ------------------------------------------------------------------------------------------------ training


def test_two_training_steps_with_delta_belief_and_an_episode_eval(compose_cfg, tmp_path):
    from drox.trainers import loop
    from drox.trainers.metrics import read_metrics

    cfg = compose_cfg("task=twenty_questions", "+reward=[outcome,delta_belief]", "rollout.multiturn.max_turns=2",
                      "rollout.multiturn.turn_tokens=6", "trainer.eval_every=2", "eval.before_training=false",
                      "eval.num_problems=2", f"run_dir={tmp_path}")
    loop.run_training(cfg, tmp_path, progress=False)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    train = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train] == [1, 2]
    for r in train:
        assert math.isfinite(r["loss"]) and r["tokens"] == r["rollout/tokens_generated"]
        for key in ("b0_mean", "bT_mean", "turn_reward_mean", "gain_mean"):
            assert math.isfinite(r[f"reward/delta_belief/{key}"])
        assert r["scoring/forward_passes"] >= 1 and 0.0 <= r["accuracy"] <= 1.0
    summary = json.loads((tmp_path / "eval" / "step-000002" / "summary.json").read_text())
    assert "pass@1" in summary and summary["eval_config"]["multiturn"] == {"max_turns": 2, "turn_tokens": 6}
    samples = [json.loads(line) for line in (tmp_path / "eval" / "step-000002" / "samples.jsonl").open()]
    assert len(samples) == 2 * 2 and all(s["completion"].startswith("Q1: ") for s in samples)
    completions = [json.loads(line) for line in (tmp_path / "completions.jsonl").open()]
    assert completions and completions[0]["completion"].startswith("Q1: ")
