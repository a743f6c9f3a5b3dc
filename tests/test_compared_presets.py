"""Compared methods' presets (CoF-sft, Pixel Reasoner, Mini-o3): each prompts with its own texts, reads turns written
in its own format by its own rules (coordinates, answer format, which turn ends the episode), and runs end to end."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from lfpc import config as C
from lfpc.agent.compared import cof, mini_o3, pixel_reasoner
from lfpc.agent.env import CropEnvironment
from lfpc.agent.presets import preset
from lfpc.agent.prompt import tool_call_text
from lfpc.data.records import Sample
from lfpc.rollout.base import SamplingConfig
from lfpc.rollout.episodes import EpisodeConfig, run_episodes
from lfpc.rollout.hf import HFRolloutEngine
from lfpc.viewer.capture import view_fields

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
DISPLAY = (512, 384)  # the 1024 x 768 noise sample shown at half size: display boxes x2 in the original
VSTAR_QUESTION = ("What color is the dot?\n(A) red\n(B) blue\n(C) green\n(D) white\n"
                  "Answer with the option's letter from the given choices directly.")
OURS_CALL = tool_call_text([128, 96, 256, 192])          # our format: a pixel box on the displayed image
PR_CALL = ('I should look closer.\n<tool_call>\n{"name": "crop_image_normalized", "arguments": '
           '{"bbox_2d": %s, "target_image": %d}}\n</tool_call>')
MO3_CALL = '<think>The dot is tiny.</think> <grounding>{"bbox_2d": %s, "source": "%s"}</grounding>'


def env(sample, name: str, max_turns: int = 5, mode: str = "pred") -> CropEnvironment:
    return CropEnvironment(sample, DISPLAY, crop_max_tokens=16, max_turns=max_turns, mode=mode, preset=preset(name))


def texts(content: list[dict]) -> list[str]:
    """A user turn's items: text as is, an image as ``<image>``."""
    return [item["text"] if item["type"] == "text" else "<image>" for item in content]


def replayed(codec, sample, name: str, turns: list[str], max_turns: int = 11):
    """The episode of ``turns`` written out (no model): the real processor, crops and tool responses."""
    ids = [codec.tokenizer.encode(turn, add_special_tokens=False) + [codec.im_end_id] for turn in turns]
    config = EpisodeConfig(max_turns=max_turns, crop_max_tokens=16, prompt=name, host_threads=1)
    [trajectory] = run_episodes(None, codec, [sample], [DISPLAY], 1, config, SamplingConfig(), replay=[ids])
    return trajectory


def _sample() -> Sample:
    return Sample(id="q", image_path="unused.png", question="What color is the dot?",
                  options=("red", "blue", "green", "white"), answer="B")


def opening(name: str, sample, tools: bool = True) -> tuple[str, list[str]]:
    system, user = preset(name).messages(sample, DISPLAY, tools)
    assert (system["role"], user["role"]) == ("system", "user")
    return system["content"][0]["text"], texts(user["content"])


# ----------------------------------------------------------------------------------------------------------------
# CoF-sft

def test_cof_prompts_with_its_own_system_prompt_and_question():
    system, user = opening("cof_sft", _sample())
    assert system.startswith("You are a helpful assistant.\n\n# Tools\nYou may call one or more functions")
    assert '"args_format": "Format the arguments as a JSON object."' in system   # CoF's tool schema, verbatim
    assert system.endswith('{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')
    instruction = ("\nThink in the mind first, and then decide whether to call tools one or more times OR provide "
                   "final answer. Format strictly as: <think>...</think> <tool_call>...</tool_call> "
                   "<tool_call>...</tool_call> (if any tools needed) OR <answer>...</answer> (if no tools needed).")
    assert user == ["<image>", f"Question: {VSTAR_QUESTION}{instruction}"]
    direct_system, direct_user = opening("cof_sft", _sample(), tools=False)
    assert direct_system == "You are a helpful assistant." and "<tool_call>" not in direct_user[1]


def test_cof_reads_its_pixel_box_enlarged_1_5x_and_its_one_line_answer(noise_sample):
    episode = env(noise_sample, "cof_sft")
    call = ('<think>The dot is small.</think> <tool_call>\n{"name": "image_zoom_in_tool", "arguments": '
            '{"bbox_2d": [100, 100, 140, 120], "label": "the dot"}}\n</tool_call>')
    crop = episode.step(call)
    # [100, 100, 140, 120] enlarged 1.5x about its centre (120, 110) -> [90, 95, 150, 125], x2 in the original
    assert crop.event["bbox"] == [100, 100, 140, 120] and crop.event["box"] == [180, 190, 300, 250]
    assert texts(crop.content()) == ["<image>", cof.INSTRUCTION]            # the crop, then its instruction again
    answer = episode.step("<think>It is blue.</think> <answer>\nB\n</answer>")
    assert answer.done and episode.outcome().answer == "B" and episode.outcome().format_ok


def test_cof_rules_differ_from_ours(noise_sample):
    # a box reaching past the image: ours clips it and crops; CoF refuses and shows the whole image, no error text
    outside = tool_call_text([400, 300, 600, 400])
    ours = env(noise_sample, "lfpc").step(outside)
    assert ours.event["box"] == [800, 600, 1024, 768]
    episode = env(noise_sample, "cof_sft")
    refused = episode.step(outside)
    assert refused.event["kind"] == "invalid" and "inside the 512 x 384 image" in refused.event["error"]
    assert not refused.done and refused.image.size == DISPLAY and texts(refused.content()) == ["<image>",
                                                                                                cof.INSTRUCTION]
    # an answer beside a tool call: CoF makes the call (ours: the turn is invalid)
    both = "<answer>B</answer>" + tool_call_text([100, 100, 140, 120])
    assert env(noise_sample, "cof_sft").step(both).event["kind"] == "tool_call"
    assert env(noise_sample, "lfpc").step(both).event["kind"] == "invalid"
    # an answer over two lines: ours reads it, CoF's one-line regex does not (the episode ends unanswered)
    two_lines = "<answer>B. blue\nthe dot</answer>"
    assert env(noise_sample, "lfpc").step(two_lines).event["kind"] == "answer"
    unanswered = env(noise_sample, "cof_sft")
    assert unanswered.step(two_lines).done and unanswered.outcome().answer is None


# ----------------------------------------------------------------------------------------------------------------
# Pixel Reasoner

def test_pixel_reasoner_prompts_with_its_tools_and_vcot_trigger():
    system, user = opening("pixel_reasoner", _sample())
    assert system.startswith("You are a helpful assistant.\n\n# Tools\n\nYou may call one or more functions")
    assert '{"type": "function", "function": {"name": "crop_image_normalized", "description": "Zoom in on the image' \
        in system and '"required": ["bbox_2d", "target_image"]' in system and '"name": "select_frames"' in system
    guidelines = ("Guidelines: Understand the given visual information and the user query. Determine if it is "
                  "beneficial to employ the given visual operations (tools). For a video, we can look closer by "
                  "`select_frames`. For an image, we can look closer by `crop_image`. Reason with the visual "
                  "information step by step, and put your final answer within \\boxed{}.")
    choices = "What color is the dot?\nchoices:\nA: red\nB: blue\nC: green\nD: white"
    assert user == ["<image>", f"{choices}\n\n\n\n{guidelines}"]
    direct_system, direct_user = opening("pixel_reasoner", _sample(), tools=False)
    assert direct_system == "You are a helpful assistant."
    assert direct_user[1].endswith("D: white\n\nPlease think step by step, and put your final answer within \\boxed{}.")


def test_pixel_reasoner_reads_normalized_boxes_padded_on_any_image_and_its_boxed_answer(noise_sample):
    episode = env(noise_sample, "pixel_reasoner")
    crop = episode.step(PR_CALL % ("[0.25, 0.25, 0.5, 0.5]", 1))
    # [0.25, 0.25, 0.5, 0.5] of 512 x 384 = [128, 96, 256, 192], padded 0.1 x (512, 384) a side, x2 in the original
    assert crop.event["bbox"] == [128, 96, 256, 192] and crop.event["source"] == 0
    assert crop.event["box"] == pytest.approx([153.6, 115.2, 614.4, 460.8])
    width, height = crop.image.size
    assert texts(crop.content()) == [f"\nHere is the cropped image (Image Size: {width}x{height}):", "<image>"]
    # target_image 2: the first crop, which shows region [153, 115, 615, 461]; [0, 0, 0.5, 0.5] padded -> [0, 0, .6, .6]
    inner = episode.step(PR_CALL % ("[0.0, 0.0, 0.5, 0.5]", 2))
    assert inner.event["source"] == 1 and inner.event["bbox"] == pytest.approx([0, 0, width / 2, height / 2])
    assert inner.event["box"] == pytest.approx([153, 115, 153 + 0.6 * 462, 115 + 0.6 * 346])
    # a value of 1 or more: pixels of the target image ([128, 96, 256, 192] is the first call's box)
    pixels = env(noise_sample, "pixel_reasoner").step(PR_CALL % ("[128, 96, 256, 192]", 1))
    assert pixels.event["box"] == pytest.approx(crop.event["box"])
    answer = episode.step("The dot is blue, so the answer is \\boxed{B}.")
    assert answer.done and episode.outcome().answer == "B"


def test_pixel_reasoner_rules_differ_from_ours(noise_sample):
    episode = env(noise_sample, "pixel_reasoner")
    refused = episode.step(OURS_CALL)                      # our tool's name and no target_image
    assert refused.event["kind"] == "invalid" and refused.image is None and not refused.done
    assert texts(refused.content()) == [f"\nExecution error:\n{refused.event['error']}\n"]
    assert episode.step(PR_CALL % ("[0.1, 0.1, 0.2, 0.2]", 3)).event["error"].startswith("Incorrect `target_image`")
    # our answer form has no \boxed{}: the turn ends the episode without an answer
    assert episode.step("<answer>B</answer>").done and episode.outcome().answer is None
    assert env(noise_sample, "lfpc").step("<answer>B</answer>").event["kind"] == "answer"


# ----------------------------------------------------------------------------------------------------------------
# Mini-o3

def test_mini_o3_prompts_with_its_own_system_prompt():
    system, user = opening("mini_o3", _sample())
    assert system == mini_o3.SYSTEM and system.startswith("You are a helpful assistant. Answer the user's question")
    assert '<grounding>{"bbox_2d": [x0, y0, x1, y1], "source": "original_image"}</grounding>' in system
    assert user == ["<image>", "\n" + VSTAR_QUESTION]
    direct_system, _ = opening("mini_o3", _sample(), tools=False)
    assert "<grounding>" not in direct_system and direct_system.endswith("put it within <answer> and </answer>.")


def test_mini_o3_reads_relative_boxes_on_the_original_or_an_observation(noise_sample):
    episode = env(noise_sample, "mini_o3", max_turns=11)
    crop = episode.step(MO3_CALL % ("[0.25, 0.25, 0.5, 0.5]", "original_image") + " ignored: generation stops")
    assert crop.event["bbox"] == [128, 96, 256, 192] and crop.event["box"] == [256, 192, 512, 384]
    after = (".\nContinue your reasoning process inside <think> and </think>. If needed, you can continue to zoom in "
             "on the original image or any of the observations, by outputting <grounding> and </grounding> as "
             "before. If the final answer is confirmed, put your final answer inside <answer> and </answer>.")
    assert texts(crop.content()) == [
        "After the above Action 0, here is the the zoom-in image (Observation 1):\n", "<image>", after]
    # observation_1 shows [256, 192, 512, 384]: its lower-right quarter is [384, 288, 512, 384]
    inner = episode.step(MO3_CALL % ("[0.5, 0.5, 1.0, 1.0]", "observation_1"))
    assert inner.event["source"] == 1 and inner.event["box"] == pytest.approx([384, 288, 512, 384])
    assert texts(inner.content())[0] == "After the above Action 1, here is the the zoom-in image (Observation 2):\n"
    missing = episode.step(MO3_CALL % ("[0.1, 0.1, 0.2, 0.2]", "observation_3"))
    error = missing.event["error"]
    assert texts(missing.content()) == [f"ERROR occurs during grounding. Error Information: {error}.\n"
                                        + mini_o3.ERROR_PROMPT]
    huge = episode.step(MO3_CALL % ("[0.1, 0.1, 0.2, 0.2]", "observation_" + "7" * 5000))  # int() refuses it
    assert huge.event["error"] == "there is no observation that large yet (2 so far)"
    padded = episode.step(MO3_CALL % ("[0.5, 0.5, 1.0, 1.0]", "observation_" + "0" * 5000 + "1"))
    assert padded.event["source"] == 1 and padded.event["box"] == pytest.approx([384, 288, 512, 384])
    answer = episode.step("<think>The dot is blue.</think> <answer>B</answer>")
    assert answer.done and episode.outcome().answer == "B" and episode.outcome().crop_boxes[2] == pytest.approx(
        (384, 288, 512, 384))


def test_mini_o3_rules_differ_from_ours(noise_sample):
    # our tool call is no <grounding>: Mini-o3 reads it as a final turn without an answer
    episode = env(noise_sample, "mini_o3", max_turns=11)
    assert episode.step(OURS_CALL).done and episode.outcome().answer is None
    assert env(noise_sample, "lfpc").step(OURS_CALL).event["kind"] == "tool_call"
    # its grounding is written exactly: keys in its order (a reordered object is refused)
    reordered = '<grounding>{"source": "original_image", "bbox_2d": [0.1, 0.1, 0.5, 0.5]}</grounding>'
    assert env(noise_sample, "mini_o3", max_turns=11).step(reordered).event["kind"] == "invalid"


def test_mini_o3_twelve_turn_cap_leaves_an_unanswered_episode_wrong(noise_sample):
    episode = env(noise_sample, "mini_o3", max_turns=11)
    results = [episode.step(MO3_CALL % ("[0.2, 0.2, 0.6, 0.6]", "original_image")) for _ in range(12)]
    assert [r.done for r in results] == [False] * 11 + [True]
    assert results[-1].event["error"].startswith("the limit of 11 tool turns") and episode.outcome().answer is None


# ----------------------------------------------------------------------------------------------------------------
# One config choice per method; end to end on the tiny model

@pytest.mark.parametrize("name, max_turns, path", [("cof_sft", 5, "/models/CoF-sft-model-7b"),
                                                   ("pixel_reasoner", 4, "/models/PixelReasoner-RL-v1"),
                                                   ("mini_o3", 11, "/models/Mini-o3-7B-v1")])
def test_model_choice_selects_the_preset_turn_cap_and_checkpoint(name, max_turns, path, tmp_path, monkeypatch):
    for variable in ("LFPC_COF_SFT", "LFPC_PIXEL_REASONER", "LFPC_MINI_O3"):
        monkeypatch.delenv(variable, raising=False)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("eval", overrides=[f"model={name}", "benchmark=synthetic", f"cache_dir={tmp_path}",
                                         "output_dir=/tmp/out", "model.path=/ckpt/x"])
        default = compose("eval", overrides=[f"model={name}", "benchmark=synthetic", f"cache_dir={tmp_path}",
                                             "output_dir=/tmp/out"])
    assert (cfg.episode.prompt, cfg.episode.max_turns, cfg.model.path) == (name, max_turns, "/ckpt/x")
    assert default.model.path == path and not cfg.model.build_tiny


CALLS = {"cof_sft": '<tool_call>\n{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [128, 96, 256, 192]}}\n'
                    '</tool_call>',
         "pixel_reasoner": PR_CALL % ("[0.25, 0.25, 0.5, 0.5]", 1),
         "mini_o3": MO3_CALL % ("[0.25, 0.25, 0.5, 0.5]", "original_image")}
SYSTEMS = {"cof_sft": cof.SYSTEM, "pixel_reasoner": pixel_reasoner.SYSTEM, "mini_o3": mini_o3.SYSTEM}
FOLLOW_UPS = {"cof_sft": cof.INSTRUCTION, "pixel_reasoner": "Here is the cropped image (Image Size: ",
              "mini_o3": "After the above Action 0, here is the the zoom-in image (Observation 1):\n"}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_an_episode_runs_end_to_end_on_the_tiny_model_with_the_preset(name, codec, tiny_model, noise_sample):
    """The method's tool call (replayed), its crop and tool response through the real processor, then the tiny
    model's own greedy turns on the multi-image context."""
    engine = HFRolloutEngine(tiny_model, codec.pad_id, codec.image_pad_id)
    call = codec.tokenizer.encode(CALLS[name], add_special_tokens=False) + [codec.im_end_id]
    config = EpisodeConfig(max_turns=2, max_new_tokens_per_turn=8, max_response_tokens=200, crop_max_tokens=16,
                           prompt=name, host_threads=1)
    torch.manual_seed(0)
    [trajectory] = run_episodes(engine, codec, [noise_sample], [DISPLAY], 1, config, SamplingConfig(temperature=0.0),
                                replay=[[call]])
    assert trajectory.events[0]["kind"] == "tool_call"
    assert trajectory.outcome.crop_boxes[0] == pytest.approx(
        {"cof_sft": (192, 144, 576, 432), "pixel_reasoner": (153.6, 115.2, 614.4, 460.8),
         "mini_o3": (256, 192, 512, 384)}[name])
    assert len(trajectory.turns) >= 2 and len(trajectory.context.images) >= 2  # the model answered the crop
    text = codec.tokenizer.decode(trajectory.context.token_ids)
    assert f"<|im_start|>system\n{SYSTEMS[name]}<|im_end|>" in text and FOLLOW_UPS[name] in text
    assert trajectory.turns[0] == CALLS[name] and trajectory.context.num_policy_tokens > len(call)


def test_viewer_draws_a_box_on_an_observation_where_it_lies_in_the_displayed_image(codec, noise_sample):
    turns = [MO3_CALL % ("[0.25, 0.25, 0.5, 0.5]", "original_image"),
             MO3_CALL % ("[0.5, 0.5, 1.0, 1.0]", "observation_1"), "<answer>B</answer>"]
    trajectory = replayed(codec, noise_sample, "mini_o3", turns)
    assert trajectory.outcome.answer == "B" and len(trajectory.context.images) == 3
    # the second box, drawn on observation 1 ([128, 96, 256, 192] of the display), is its lower-right quarter
    assert view_fields(trajectory)["pred_boxes"] == [[128, 96, 256, 192], pytest.approx([192, 144, 256, 192])]


def test_free_form_questions_have_no_options():
    sample = dataclasses.replace(_sample(), options=(), answer="blue")
    assert opening("cof_sft", sample)[1][1].startswith("Question: What color is the dot?\nThink in the mind")
    assert opening("mini_o3", sample)[1][1] == "\nWhat color is the dot?"
    assert opening("pixel_reasoner", sample)[1][1].startswith("What color is the dot?\n\n\n\nGuidelines:")


# ----------------------------------------------------------------------------------------------------------------
# DeepEyes' training protocol (protocol=deepeyes): its environment's rules and turn cap

DE_CALL = ('<think>Look closer.</think> <tool_call>{"name": "image_zoom_in_tool", "arguments": '
           '{"bbox_2d": [128, 96, 256, 192]}}</tool_call>')


def test_deepeyes_training_rules_answer_wins_and_neither_ends_the_episode(noise_sample):
    both = env(noise_sample, "deepeyes_training").step(DE_CALL + " <answer>A</answer> then <answer>C</answer>")
    assert both.done and both.event["kind"] == "answer"
    episode = env(noise_sample, "deepeyes_training")
    assert episode.step("<answer> </answer>" + DE_CALL).image is not None  # an empty answer: the call runs
    neither = env(noise_sample, "deepeyes_training")
    result = neither.step("<think>I am not sure.</think> The dot may be blue.")
    assert result.done and neither.outcome().answer is None
    ours = env(noise_sample, "lfpc")  # our rule: both, or neither, is an invalid call and the episode goes on
    assert not ours.step("The dot may be blue.").done and not ours.step(DE_CALL + "<answer>A</answer>").done
    assert ours.outcome().num_invalid_calls == 2
    failed = env(noise_sample, "deepeyes_training").step(DE_CALL.replace("[128, 96, 256, 192]", "[5, 5, 5, 9]"))
    assert failed.text == "Error: bbox_2d [5, 5, 5, 9] has zero area" and not failed.done


def test_deepeyes_training_turn_cap_counts_the_answer_turn(noise_sample):
    """agent.max_turns=5 in DeepEyes: 5 generations, so 4 crops and a 5th call ends the episode unanswered."""
    episode = env(noise_sample, "deepeyes_training", max_turns=5)
    results = [episode.step(DE_CALL) for _ in range(5)]
    assert [r.image is not None for r in results] == [True] * 4 + [False]
    assert results[-1].done and episode.outcome().answer is None and episode.outcome().num_crops == 4
    ours = env(noise_sample, "lfpc", max_turns=5)
    assert [ours.step(OURS_CALL).image is not None for _ in range(5)] == [True] * 5  # ours: 5 crops, then answer


@pytest.mark.parametrize("choice, prompt", [(None, "lfpc"), ("deepeyes", "deepeyes_training")])
def test_one_config_value_selects_the_training_protocol(choice, prompt):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["size=paper", "+stage=infogap", "output_dir=/tmp/out",
                                           "cache_dir=/tmp/cache", *([f"protocol={choice}"] if choice else [])])
    assert C.episode_config(cfg).prompt == prompt and cfg.episode.max_turns == 5
