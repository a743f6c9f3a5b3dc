"""Token-in/token-out rollouts on the real tiny Qwen2.5-VL: batching, log-prob agreement, M-RoPE, multi-turn crops."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import shutil

import pytest
import torch
from PIL import Image

from lfpc.agent.prompt import initial_messages, tool_call_text
from lfpc.grpo.logprobs import sequence_logprobs, shifted_policy_tensors
from lfpc.rollout.base import Completion, SamplingConfig
from lfpc.rollout.codec import ChatCodec
from lfpc.rollout.episodes import EpisodeConfig, run_episodes
from lfpc.rollout.hf import HFRolloutEngine
from lfpc.rollout.inputs import batch_inputs


def test_prompt_has_one_pad_per_visual_token(codec, noise_sample):
    context = codec.start([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
                          [_image(noise_sample, (280, 196))])
    # 280x196 px -> 10x7 merged tokens = 70 pads; grid (t, h, w) = (1, 14, 20) patches of 14 px
    assert context.image_grid_thw[0].tolist() == [1, 14, 20]
    assert codec.image_size(context.image_grid_thw[0]) == (280, 196)  # 20 x 14 px, 14 x 14 px
    assert context.token_ids.count(codec.image_pad_id) == 70
    assert context.policy_mask == [0] * len(context.token_ids)


class ScriptedEngine:
    """Returns fixed assistant turns (tokenized with the real tokenizer) in order: a stand-in policy."""

    def __init__(self, codec, turns):
        self.codec, self.turns, self.calls = codec, list(turns), 0

    def generate(self, contexts, sampling):
        text = self.turns[self.calls]
        self.calls += 1
        ids = self.codec.tokenizer.encode(text, add_special_tokens=False) + [self.codec.im_end_id]
        return [Completion(ids, [-1.0] * len(ids), "stop") for _ in contexts]

    def load_weights(self, named_tensors):
        raise NotImplementedError


def test_two_crop_episode_with_real_processor_and_model(codec, tiny_model, noise_sample):
    turns = [tool_call_text([25, 25, 89, 89]), tool_call_text([0, 0, 140, 140]), "<answer>B</answer>"]
    engine = ScriptedEngine(codec, turns)
    display = (512, 384)  # the 1024x768 original shown at half size
    [trajectory] = run_episodes(engine, codec, [noise_sample], [display], 1,
                                EpisodeConfig(crop_max_tokens=16), SamplingConfig())
    context = trajectory.context
    assert trajectory.outcome.answer == "B" and trajectory.outcome.format_ok
    # display boxes map x2 into the original: [25,25,89,89] -> [50,50,178,178]
    assert trajectory.outcome.crop_boxes == ((50.0, 50.0, 178.0, 178.0), (0.0, 0.0, 280.0, 280.0))
    assert len(context.images) == 3
    pads = torch.tensor(context.token_ids) == codec.image_pad_id
    assert int(pads.sum()) == sum(int(g.prod()) // 4 for g in context.image_grid_thw)
    # every scripted token (and only those) is marked as policy output
    scripted = sum(len(codec.tokenizer.encode(t, add_special_tokens=False)) + 1 for t in turns)
    assert context.num_policy_tokens == scripted
    generated = [t for t, m in zip(context.token_ids, context.policy_mask) if m]
    assert codec.tokenizer.decode(generated).count("</tool_call>") == 2
    # a real forward over the 3-image sequence, with explicit M-RoPE positions equal to the automatic ones
    inputs = batch_inputs([context], codec.pad_id, codec.image_pad_id)
    positions, _ = tiny_model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                                   inputs["image_grid_thw"], attention_mask=inputs["attention_mask"])
    auto = sequence_logprobs(tiny_model, [context], codec.pad_id, codec.image_pad_id)["logprobs"]
    explicit = sequence_logprobs(tiny_model, [context], codec.pad_id, codec.image_pad_id, position_ids=positions)
    torch.testing.assert_close(auto, explicit["logprobs"])
    # 1-D positions (what transformers falls back to without mm_token_type_ids) give different log-probs
    text_positions = torch.arange(len(context.token_ids)).view(1, 1, -1).expand(3, 1, -1)
    wrong = sequence_logprobs(tiny_model, [context], codec.pad_id, codec.image_pad_id, position_ids=text_positions)
    assert (wrong["logprobs"] - auto).abs().max() > 1e-4


def test_host_threads_change_no_token_and_no_pixel(codec, noise_sample):
    turns = [tool_call_text([25, 25, 89, 89]), tool_call_text([0, 0, 140, 140]), "<answer>B</answer>"]
    runs = [run_episodes(ScriptedEngine(codec, turns), codec, [noise_sample, noise_sample], [(512, 384), (224, 168)],
                         3, EpisodeConfig(crop_max_tokens=16, host_threads=threads, crop_mode=mode),
                         SamplingConfig(), seed=1)
            for threads, mode in ((1, "pred"), (4, "pred"), (1, "noise"), (4, "noise"))]
    for serial, threaded in (runs[:2], runs[2:]):
        for a, b in zip(serial, threaded):
            assert a.context.token_ids == b.context.token_ids and a.events == b.events
            assert len(a.context.images) == 3
            assert [i.tobytes() for i in a.context.images] == [i.tobytes() for i in b.context.images]
            assert all(torch.equal(p, q) for p, q in zip(a.context.pixel_values, b.context.pixel_values))
    # the global view is the one function's output, encoded by the processor as before
    original = Image.open(noise_sample.image_path).convert("RGB")
    view = original.resize((224, 168), Image.Resampling.BICUBIC)
    trajectory = runs[1][3]
    assert trajectory.context.images[0].tobytes() == view.tobytes()
    assert torch.equal(trajectory.context.pixel_values[0], codec.encode_image(view)[0])


class OutOfOrderStreamingEngine(ScriptedEngine):
    """A streaming engine (submit / poll) over the same script, keyed by each context's number of assistant turns:
    every poll finishes a random subset of the open tickets, so episodes run out of step with each other."""

    def __init__(self, codec, turns, seed):
        super().__init__(codec, turns)
        self.rng, self.open, self.tickets, self.submitted = random.Random(seed), {}, itertools.count(), []

    def submit(self, contexts, sampling):
        ticket = next(self.tickets)
        self.open[ticket] = contexts
        self.submitted.append((len(contexts), sampling.seed))
        return ticket

    def poll(self):
        finishing = [t for t in self.open if self.rng.random() < 0.4]
        return [(t, [self._scripted(c) for c in self.open.pop(t)]) for t in finishing]

    def sleep(self):
        pass

    def _scripted(self, context):
        turn = sum(1 for i, m in enumerate(context.policy_mask) if m and (i == 0 or not context.policy_mask[i - 1]))
        ids = self.codec.tokenizer.encode(self.turns[turn], add_special_tokens=False) + [self.codec.im_end_id]
        return Completion(ids, [-1.0] * len(ids), "stop")


@pytest.mark.parametrize("mode", ["pred", "noise"])
def test_streamed_episodes_equal_turn_by_turn_episodes(codec, noise_sample, mode):
    turns = [tool_call_text([25, 25, 89, 89]), tool_call_text([0, 0, 140, 140]), "<answer>B</answer>"]
    config = EpisodeConfig(crop_max_tokens=16, crop_mode=mode, host_threads=2)
    args = (codec, [noise_sample, noise_sample], [(512, 384), (224, 168)], 3, config, SamplingConfig())
    by_turns = run_episodes(ScriptedEngine(codec, turns), *args, seed=1)
    streamed = [OutOfOrderStreamingEngine(codec, turns, seed) for seed in (0, 1)]
    runs = [run_episodes(engine, *args, seed=1) for engine in streamed]
    for run in runs:
        assert len(run) == 6
        for a, b in zip(by_turns, run):
            assert a.context.token_ids == b.context.token_ids and a.events == b.events and len(a.context.images) == 3
            assert [i.tobytes() for i in a.context.images] == [i.tobytes() for i in b.context.images]
            assert all(torch.equal(p, q) for p, q in zip(a.context.pixel_values, b.context.pixel_values))
    # each prompt's first turn is one request for its 3 rollouts, then one request per episode and turn, each
    # with its own seed, the same whatever order the requests finished in
    first, second = (engine.submitted for engine in streamed)
    assert sorted(first) == sorted(second) and first != second
    assert sorted(n for n, _ in first) == [1] * 12 + [3] * 2
    assert len({seed for _, seed in first}) == 14


def test_batched_left_padded_generation_matches_single(codec, tiny_model, noise_sample):
    engine = HFRolloutEngine(tiny_model, codec.pad_id, codec.image_pad_id, batch_size=8)
    short = codec.start(_messages("zoom"), [_image(noise_sample, (112, 84))])
    long = codec.start(_messages("a much longer question about the small object in the image"),
                       [_image(noise_sample, (224, 168))])
    greedy = SamplingConfig(max_new_tokens=12, temperature=0.0, stop_token_ids=codec.stop_token_ids)
    together = engine.generate([short, long], greedy)
    alone = [engine.generate([c], greedy)[0] for c in (short, long)]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    for a, b in zip(together, alone):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)


def test_rollout_logprobs_match_trainer_logprobs(codec, tiny_model, noise_sample):
    engine = HFRolloutEngine(tiny_model, codec.pad_id, codec.image_pad_id)
    torch.manual_seed(0)
    trajectories = run_episodes(engine, codec, [noise_sample], [(224, 168)], 3,
                                EpisodeConfig(max_new_tokens_per_turn=16, max_response_tokens=40, crop_max_tokens=16),
                                SamplingConfig(temperature=1.0))
    contexts = [t.context for t in trajectories]
    assert all(c.num_policy_tokens >= 16 for c in contexts)  # at least one full turn each, tool turns appended
    # episodes sample with the vision tokens suppressed: the engine's log-probs are under that distribution
    trainer = sequence_logprobs(tiny_model, contexts, codec.pad_id, codec.image_pad_id,
                                suppress_token_ids=codec.vision_token_ids)["logprobs"]
    raw = sequence_logprobs(tiny_model, contexts, codec.pad_id, codec.image_pad_id)["logprobs"]
    aligned = shifted_policy_tensors(contexts)
    mask = aligned["mask"].bool()
    torch.testing.assert_close(trainer[mask], aligned["rollout_logprobs"][mask], atol=2e-4, rtol=0)
    assert (raw[mask] < aligned["rollout_logprobs"][mask]).all()  # not the full-vocabulary log-probs


def test_trainer_logprobs_match_a_forward_on_the_processors_own_inputs(codec, tiny_model, noise_sample):
    """An independent reference for the trainer's inputs: the processor builds ids, images and M-RoPE token types
    from the text itself; a 2-image context batched behind a shorter one must get the same log-probs."""
    images = [_image(noise_sample, (112, 84)), _image(noise_sample, (56, 140))]
    content = [{"type": "image"}, {"type": "text", "text": "left"},
               {"type": "image"}, {"type": "text", "text": "which?"}]
    context = codec.start([{"role": "user", "content": content}], images)
    context.extend(codec.completion_ids("<answer>A</answer>"), from_policy=True)
    ids = context.token_ids
    one_pad_each = [t for i, t in enumerate(ids) if t != codec.image_pad_id or ids[i - 1] != codec.image_pad_id]
    reference = codec.processor(text=[codec.tokenizer.decode(one_pad_each)], images=images, return_tensors="pt")
    assert reference["input_ids"][0].tolist() == ids
    with torch.no_grad():
        logits = tiny_model(**reference, use_cache=False).logits[0, :-1].float()
    expected = torch.log_softmax(logits, dim=-1).gather(-1, reference["input_ids"][0, 1:, None]).squeeze(-1)
    short = codec.start(_messages("zoom"), [_image(noise_sample, (56, 56))])
    actual = sequence_logprobs(tiny_model, [short, context], codec.pad_id, codec.image_pad_id)["logprobs"][1]
    policy = torch.tensor(context.policy_mask[1:], dtype=torch.bool)  # where log-probs predict a policy token
    assert policy.sum() == len(codec.completion_ids("<answer>A</answer>"))
    torch.testing.assert_close(actual[:len(policy)][policy], expected[policy], atol=1e-4, rtol=0)


def test_multi_turn_multi_image_logprobs_match_trainer_and_nothing_is_computed_twice(codec, tiny_model,
                                                                                    noise_sample, monkeypatch):
    """Each image is encoded once, each turn prefills only what was appended since the context's previous turn (the
    group's identical prompts once), and the log-probs still equal the trainer's forward over whole sequences; the
    batches are regrouped every turn, so kept keys and values of different lengths are aligned side by side."""
    engine = HFRolloutEngine(tiny_model, codec.pad_id, codec.image_pad_id, batch_size=2)
    encoded, prefills = [], []
    encode = tiny_model.model.get_image_features
    monkeypatch.setattr(tiny_model.model, "get_image_features",
                        lambda pixels, grid, **kw: encoded.extend(grid.tolist()) or encode(pixels, grid, **kw))
    tiny_model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: prefills.append(kwargs["inputs_embeds"].shape[:2])
        if kwargs["inputs_embeds"].shape[1] > 1 else None, with_kwargs=True)
    prompt = codec.start(_messages("zoom"), [_image(noise_sample, (224, 168))])
    contexts = [prompt.copy() for _ in range(3)]  # a group of 3: one prompt image shared, batches of 2
    sampling = SamplingConfig(max_new_tokens=6, temperature=1.0, stop_token_ids=codec.stop_token_ids)
    crops = [(56, 56), (84, 56), (56, 112)]
    torch.manual_seed(0)
    appended = []  # per turn after the first: the most tokens any context gained since its previous turn
    for turn, size in enumerate(crops + [None]):
        before = [len(c.token_ids) for c in contexts]
        for context, completion in zip(contexts, engine.generate(contexts, sampling)):
            context.extend(completion.token_ids, from_policy=True, logprobs=completion.logprobs)
            if size:
                codec.append_user_turn(context, [{"type": "image"}, {"type": "text", "text": "crop"}],
                                       [_image(noise_sample, size)])
        if turn:
            appended.append(max(len(c.token_ids) - n for c, n in zip(contexts, before_previous)))
        before_previous = before
        contexts = contexts[1:] + contexts[:1]
    assert all(len(c.images) == 4 for c in contexts)
    # the shared prompt image once, then each context's crop once in the turn that added it
    assert len(encoded) == 1 + 3 * len(crops)
    # turn 1: each batch prefills the prompt once (all but its last token, which generate feeds); then each batch
    # prefills at most what its contexts gained, never a whole sequence again
    assert prefills[:2] == [(1, len(prompt.token_ids) - 1)] * 2
    later = [width for _, width in prefills[2:]]
    assert len(later) == 2 * len(crops) and max(later) < len(prompt.token_ids) // 2
    assert all(width < bound for width, bound in zip(later, [b for b in appended for _ in range(2)]))
    trainer = sequence_logprobs(tiny_model, contexts, codec.pad_id, codec.image_pad_id)["logprobs"]
    aligned = shifted_policy_tensors(contexts)
    mask = aligned["mask"].bool()
    assert int(mask.sum()) >= 4 * 3
    torch.testing.assert_close(trainer[mask], aligned["rollout_logprobs"][mask], atol=2e-4, rtol=0)


def test_weight_push_covers_every_parameter_and_changes_generation(codec, tiny_model_dir, noise_sample):
    from lfpc.model.loading import load_model
    from lfpc.distributed import full_named_tensors
    trainer_model, replica = load_model(tiny_model_dir), load_model(tiny_model_dir)
    with torch.no_grad():
        for p in trainer_model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    engine = HFRolloutEngine(replica, codec.pad_id, codec.image_pad_id)
    context = codec.start(_messages("zoom"), [_image(noise_sample, (112, 84))])
    greedy = SamplingConfig(max_new_tokens=8, temperature=0.0, stop_token_ids=codec.stop_token_ids)
    before = engine.generate([context], greedy)[0]
    engine.load_weights(full_named_tensors(trainer_model))
    after = engine.generate([context], greedy)[0]
    reference = HFRolloutEngine(trainer_model, codec.pad_id, codec.image_pad_id).generate([context], greedy)[0]
    assert after.token_ids == reference.token_ids and after.logprobs != before.logprobs
    for (name, a), b in zip(replica.state_dict().items(), trainer_model.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("kept_cache_gib", [4.0, 0.0])
def test_a_turn_replaced_after_generation_reuses_the_kept_context(codec, tiny_model, noise_sample, kept_cache_gib):
    """A context whose last turn is not what the engine generated (a scripted or replayed turn) continues from the
    kept keys and values of the context before that turn and gives what a fresh engine gives; with no room to keep
    them (``kept_cache_gib=0``) the whole context is prefilled again, with the same result."""
    engine = HFRolloutEngine(tiny_model, codec.pad_id, codec.image_pad_id, kept_cache_gib=kept_cache_gib)
    widths = []
    tiny_model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True)
    context = codec.start(_messages("zoom"), [_image(noise_sample, (112, 84))])
    greedy = SamplingConfig(max_new_tokens=8, temperature=0.0, stop_token_ids=codec.stop_token_ids)
    engine.generate([context], greedy)
    scripted = codec.completion_ids(tool_call_text([10, 10, 60, 60]))
    context.extend(scripted, from_policy=True)
    codec.append_user_turn(context, [{"type": "image"}, {"type": "text", "text": "crop"}],
                           [_image(noise_sample, (56, 56))])
    appended = len(context.token_ids) - len(codec.start(_messages("zoom"), [_image(noise_sample, (112, 84))]).token_ids)
    widths.clear()
    second = engine.generate([context], greedy)[0]
    # kept: the scripted turn, the tool reply and its crop, but the last token; else the whole context but that token
    assert widths[0] == (appended if kept_cache_gib else len(context.token_ids)) - 1
    reference = HFRolloutEngine(tiny_model, codec.pad_id, codec.image_pad_id).generate([context], greedy)[0]
    assert second.token_ids == reference.token_ids
    torch.testing.assert_close(torch.tensor(second.logprobs), torch.tensor(reference.logprobs), atol=1e-5, rtol=0)


def test_kept_keys_and_values_are_dropped_when_the_weights_change(codec, tiny_model_dir, noise_sample):
    from lfpc.model.loading import load_model
    from lfpc.distributed import full_named_tensors
    trainer_model, replica = load_model(tiny_model_dir), load_model(tiny_model_dir)
    with torch.no_grad():
        for p in trainer_model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    engine = HFRolloutEngine(replica, codec.pad_id, codec.image_pad_id)
    context = codec.start(_messages("zoom"), [_image(noise_sample, (112, 84))])
    greedy = SamplingConfig(max_new_tokens=8, temperature=0.0, stop_token_ids=codec.stop_token_ids)
    first = engine.generate([context], greedy)[0]
    context.extend(first.token_ids, from_policy=True, logprobs=first.logprobs)
    codec.append_user_turn(context, [{"type": "image"}, {"type": "text", "text": "crop"}],
                           [_image(noise_sample, (56, 56))])
    engine.load_weights(full_named_tensors(trainer_model))
    second = engine.generate([context], greedy)[0]
    reference = HFRolloutEngine(trainer_model, codec.pad_id, codec.image_pad_id).generate([context], greedy)[0]
    assert second.token_ids == reference.token_ids
    torch.testing.assert_close(torch.tensor(second.logprobs), torch.tensor(reference.logprobs), atol=1e-5, rtol=0)


def _messages(text):
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def _image(sample, size):
    return Image.open(sample.image_path).convert("RGB").resize(size)


def test_completion_ids_end_on_a_stop_token(codec):
    call = codec.completion_ids(tool_call_text([1, 2, 3, 4]))
    answer = codec.completion_ids("<answer>A</answer>")
    assert call[-1] == codec.token_id("</tool_call>") and call.count(codec.im_end_id) == 0
    assert answer[-1] == codec.im_end_id and answer[:-1] == codec.tokenizer.encode("<answer>A</answer>",
                                                                                  add_special_tokens=False)


def test_special_tokens_in_an_invalid_call_do_not_reach_the_observation(codec, noise_sample):
    turns = ['<tool_call>{"name": "<|image_pad|>"}</tool_call>', "<answer>B</answer>"]
    [trajectory] = run_episodes(ScriptedEngine(codec, turns), codec, [noise_sample], [(112, 84)], 1,
                                EpisodeConfig(crop_max_tokens=16), SamplingConfig())
    assert trajectory.outcome.answer == "B" and trajectory.outcome.num_invalid_calls == 1
    # one image (the global view): the model's <|image_pad|> is policy output, never echoed as a prompt slot
    prompt = [t for t, m in zip(trajectory.context.token_ids, trajectory.context.policy_mask) if not m]
    assert prompt.count(codec.image_pad_id) == codec.image_tokens(trajectory.context.image_grid_thw[0])


@pytest.mark.parametrize("where", ["question", "observation"])
def test_codec_refuses_special_tokens_in_text_the_policy_did_not_write(codec, noise_sample, where):
    question = "What does <|image_pad|> mean?" if where == "question" else noise_sample.question
    sample = dataclasses.replace(noise_sample, question=question)
    image = _image(noise_sample, (112, 84))
    with pytest.raises(ValueError, match="contains the special token '<\\|image_pad\\|>', which only the chat"):
        context = codec.start(initial_messages(sample, (112, 84)), [image])
        codec.append_user_turn(context, [{"type": "text", "text": "<tool_response>Error: <|image_pad|>"}], [])
# A text-only Qwen2.5 chat template, as a released checkpoint's tokenizer_config.json may carry: it concatenates
# each message's content as a string, so list content (text and image items) cannot be rendered with it.
TEXT_ONLY_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
                      "+ '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
                      "{{ '<|im_start|>assistant\\n' }}{% endif %}")


def test_prompt_uses_the_processor_template_when_the_tokenizer_has_another(tiny_model_dir, noise_sample, tmp_path):
    folder = tmp_path / "released-layout"  # processor template in chat_template.json, tokenizer's in its config
    shutil.copytree(tiny_model_dir, folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": TEXT_ONLY_TEMPLATE}))
    codec = ChatCodec.for_model(str(folder), 256)
    assert codec.tokenizer.chat_template == TEXT_ONLY_TEMPLATE != codec.processor.chat_template
    messages = [{"role": "system", "content": "Use the tool."},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which color?"}]}]
    image = _image(noise_sample, (112, 84))
    context = codec.start(messages, [image])
    text = codec.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    expected = codec.processor(text=[text], images=[image], return_tensors="pt")["input_ids"][0].tolist()
    assert context.token_ids == expected
