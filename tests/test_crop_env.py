"""Crop environment: box mapping, validation, turn limits, modes; and the decoded-image cache."""

import dataclasses
import json
import os

import numpy as np
import pytest
from PIL import Image

from lfpc.agent.env import CropEnvironment
from lfpc.agent.presets import DEEPEYES_INSTRUCTION, preset
from lfpc.agent.prompt import (DIRECT_REMINDER, FINAL_REMINDER, REMINDER, TOOL_NAME, initial_messages,
                               observation_text, question_text, system_prompt, tool_response_content)
from lfpc.data.records import Sample
from lfpc.vision.images import ImageCache

B1 = (1000.0, 1000.0, 1112.0, 1056.0)  # 112 x 56 px: on the 28 px grid, so crops keep exact pixels
NESTED = (B1, (900.0, 900.0, 1300.0, 1200.0), (500.0, 500.0, 1800.0, 1700.0))  # B1 inside B2 inside B3


def coded_image(width: int, height: int) -> np.ndarray:
    """RGB array whose pixels are unique: R = x % 256, G = y % 256, B = 8 * (x // 256) + y // 256."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs % 256, ys % 256, 8 * (xs // 256) + ys // 256], axis=-1).astype(np.uint8)


def make_sample(path, boxes=NESTED) -> Sample:
    with Image.open(path) as image:
        size = image.size
    return Sample(id="s1", image_path=str(path), question="What colour is the sign?",
                  options=("red", "blue", "green", "white"), answer="A", boxes=tuple(boxes), image_size=size)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A 2048 x 2048 coded PNG and its pixels."""
    pixels = coded_image(2048, 2048)
    path = tmp_path_factory.mktemp("img") / "big.png"
    Image.fromarray(pixels).save(path, compress_level=1)
    return path, pixels


def zoom(*bbox) -> str:
    return ("<think>zoom</think><tool_call>"
            + json.dumps({"name": TOOL_NAME, "arguments": {"bbox_2d": list(bbox)}}) + "</tool_call>")


def env_for(big, **kwargs) -> CropEnvironment:
    path, _ = big
    kwargs.setdefault("crop_max_tokens", 256)
    return CropEnvironment(make_sample(path), display_size=(512, 512), **kwargs)


def test_box_maps_4x_to_the_original_and_crop_keeps_its_pixels(big):
    env = env_for(big)
    result = env.step(zoom(100, 50, 128, 64))
    # 512 px display of a 2048 image: x4 -> [400, 200, 512, 256], 112 x 56 px = 4 x 2 = 8 tokens.
    assert not result.done and result.event["error"] is None
    assert result.event["box"] == [400, 200, 512, 256]
    assert result.event["crop_size"] == [112, 56] and result.event["visual_tokens"] == 8
    assert np.array_equal(np.asarray(result.image), big[1][200:256, 400:512])
    assert result.text == REMINDER


def test_box_maps_with_separate_x_and_y_scales(tmp_path):
    pixels = coded_image(1024, 768)
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    env = CropEnvironment(make_sample(path, boxes=()), display_size=(512, 192), crop_max_tokens=256)
    result = env.step(zoom(50, 25, 106, 39))
    # 1024 x 768 shown at 512 x 192: x2 horizontally, x4 vertically -> [100, 100, 212, 156] (112 x 56 px).
    # Swapping width and height in either frame gives other scales (5.33/1.5, 1.5/5.33 or 4/2).
    assert result.event["box"] == [100, 100, 212, 156]
    assert np.array_equal(np.asarray(result.image), pixels[100:156, 100:212])
    assert env.global_image().size == (512, 192)


def test_crop_is_resized_under_the_crop_budget(big):
    env = env_for(big, crop_max_tokens=16)
    result = env.step(zoom(0, 0, 256, 256))
    # Original region 1024 x 1024; 16 tokens = 12544 px -> beta = 1024/112 -> 4 x 4 blocks = 112 x 112.
    assert result.event["box"] == [0, 0, 1024, 1024]
    assert result.image.size == (112, 112) and result.event["visual_tokens"] == 16


def test_global_image_has_the_display_size(big):
    assert env_for(big).global_image().size == (512, 512)


def test_partly_outside_box_is_clipped(big):
    result = env_for(big).step(zoom(480, 490, 530, 600))
    # Clipped to [480, 490, 512, 512] in the display, x4 -> [1920, 1960, 2048, 2048].
    assert result.event["box"] == [1920, 1960, 2048, 2048] and result.event["error"] is None
    assert result.image is not None


def test_tiny_box_is_enlarged_around_its_centre(big):
    env = env_for(big)
    result = env.step(zoom(100, 100, 102, 103))
    # Original [400, 400, 408, 412]: centres 404 and 406 -> 28 px windows [390, 418] and [392, 420]; the box
    # (what IoU, coverage and the grounding reward score) stays the prediction, the region is the cropped window
    assert result.event["region"] == [390, 392, 418, 420] and result.event["box"] == [400, 400, 408, 412]
    assert env.outcome().crop_boxes == ((400.0, 400.0, 408.0, 412.0),)
    # 28 x 28 = 1 token < crop_min_tokens 4, so it is upsampled to 56 x 56.
    assert result.image.size == (56, 56)
    corner = env.step(zoom(0, 0, 1, 1))
    # Original [0, 0, 4, 4]: the 28 px window around 2 would start at -12, so it is shifted to [0, 28].
    assert corner.event["region"] == [0, 0, 28, 28] and corner.event["box"] == [0, 0, 4, 4]


def test_crop_impossible_in_a_too_narrow_image(tmp_path):
    path = tmp_path / "narrow.png"
    Image.fromarray(coded_image(20, 300)).save(path)
    env = CropEnvironment(make_sample(path, boxes=()), display_size=(20, 300), crop_max_tokens=64)
    result = env.step(zoom(0, 0, 10, 100))
    assert "the image is only 20 px wide, smaller than the 28 px a crop needs" in result.event["error"]
    assert result.image is None and not result.done


def test_extreme_aspect_crop_is_rejected(tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(coded_image(2900, 100)).save(path)
    env = CropEnvironment(make_sample(path, boxes=()), display_size=(2900, 100), crop_max_tokens=64)
    result = env.step(zoom(0, 0, 2900, 28))
    # 2900 / 28 = 103.6 > 100.
    assert "[0, 0, 2900, 28] (2900 x 28 px in the original image) has aspect ratio 103.6 > 100" in result.event["error"]


@pytest.mark.parametrize("bbox, message", [
    ((10, 10, 10, 50), "bbox_2d [10, 10, 10, 50] has zero area"),
    ((50, 10, 20, 50), "bbox_2d [50, 10, 20, 50] has x2 < x1 or y2 < y1"),
    ((600, 600, 700, 700), "bbox_2d [600, 600, 700, 700] lies entirely outside the 512 x 512 image"),
    ((-50, 0, 0, 40), "lies entirely outside"),
])
def test_invalid_boxes_give_error_observations(big, bbox, message):
    env = env_for(big)
    result = env.step(zoom(*bbox))
    assert not result.done and result.image is None
    assert message in result.event["error"]
    assert result.text.startswith(f"Error: {result.event['error']}") and result.text.endswith(REMINDER)
    content = tool_response_content(result.image is not None, result.text)
    assert [item["type"] for item in content] == ["text", "text"]
    assert content[0]["text"] == "<tool_response>" and content[1]["text"].endswith("</tool_response>")
    env.step("<answer>A</answer>")
    outcome = env.outcome()
    assert outcome.num_invalid_calls == 1 and outcome.crop_boxes == () and outcome.format_ok


def test_unparseable_turn_is_counted_and_breaks_format(big):
    env = env_for(big)
    result = env.step("<tool_call>{oops}</tool_call>")
    assert not result.done and "not valid JSON" in result.text
    env.step("<answer>A</answer>")
    outcome = env.outcome()
    assert outcome.answer == "A" and not outcome.format_ok and outcome.num_invalid_calls == 1


def test_successful_episode_outcome(big):
    env = env_for(big)
    crop = env.step(zoom(100, 50, 128, 64))
    assert [item["type"] for item in crop.content()] == ["text", "image", "text"]
    end = env.step("<answer>A</answer>")
    assert end.done and end.image is None
    outcome = env.outcome()
    assert outcome.answer == "A" and outcome.format_ok and outcome.num_invalid_calls == 0
    assert outcome.crop_boxes == ((400.0, 200.0, 512.0, 256.0),)
    assert [event["kind"] for event in env.events] == ["tool_call", "answer"]
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step("<answer>B</answer>")


def test_max_turns_then_one_answer_turn(big):
    env = env_for(big, max_turns=2)
    assert env.step(zoom(0, 0, 100, 100)).text == REMINDER
    second = env.step(zoom(0, 0, 50, 50))
    assert second.text == FINAL_REMINDER and not second.done
    third = env.step(zoom(0, 0, 60, 60))
    assert third.done and third.image is None
    assert "limit of 2 tool turns is reached" in third.event["error"]
    outcome = env.outcome()
    assert outcome.answer is None and not outcome.format_ok
    assert len(outcome.crop_boxes) == 2 and outcome.num_invalid_calls == 1


def test_answer_in_the_extra_turn_is_accepted(big):
    env = env_for(big, max_turns=1)
    assert env.step(zoom(0, 0, 100, 100)).text == FINAL_REMINDER
    assert env.step("<answer>C</answer>").done
    assert env.outcome().format_ok and env.outcome().answer == "C"


def test_invalid_turns_use_up_the_turn_budget(big):
    env = env_for(big, max_turns=1)
    assert not env.step("no tags at all").done
    assert env.step("still no tags").done
    assert env.outcome().num_invalid_calls == 2 and env.outcome().answer is None


def test_gt_mode_crops_b1_whatever_the_prediction(big):
    for bbox in [(0, 0, 50, 50), (10, 10, 10, 50), (600, 600, 700, 700)]:
        env = env_for(big, mode="gt")
        result = env.step(zoom(*bbox))
        assert result.event["box"] == list(B1) and result.event["bbox"] == list(bbox)  # B1, not B2 or B3
        # B1 = [1000, 1000, 1112, 1056] is on the 28 px grid: the crop is exactly the original region.
        assert np.array_equal(np.asarray(result.image), big[1][1000:1056, 1000:1112])


def test_gt_mode_needs_gt_boxes(big):
    with pytest.raises(ValueError, match="mode 'gt' needs GT boxes"):
        CropEnvironment(make_sample(big[0], boxes=()), (512, 512), 64, mode="gt")


def test_noise_mode_returns_seeded_noise_of_the_crop_size(big):
    region = big[1][200:256, 400:512].astype(float)
    crops = []
    for seed in (0, 0, 1):
        result = env_for(big, mode="noise", seed=seed).step(zoom(100, 50, 128, 64))
        assert result.event["box"] == [400, 200, 512, 256] and result.image.size == (112, 56)
        crops.append(np.asarray(result.image))
    noise = crops[0].astype(float)
    assert abs(np.corrcoef(noise.ravel(), region.ravel())[0, 1]) < 0.05
    assert 100 < noise.mean() < 155 and noise.std() > 60  # uniform on [0, 255]: mean 127.5, std 73.9
    assert np.array_equal(crops[0], crops[1]) and not np.array_equal(crops[0], crops[2])


def test_direct_mode_ends_on_a_tool_call(big):
    env = env_for(big, mode="direct")
    result = env.step(zoom(100, 50, 128, 64))
    assert result.done and result.image is None
    assert "not allowed" in result.event["error"]
    outcome = env.outcome()
    assert outcome.answer is None and not outcome.format_ok and outcome.crop_boxes == ()
    retried = env_for(big, mode="direct")
    assert retried.step("no tags").text.endswith(DIRECT_REMINDER)
    answered = env_for(big, mode="direct")
    assert answered.step("<answer>B</answer>").done and answered.outcome().format_ok


def test_unknown_mode_is_rejected(big):
    with pytest.raises(ValueError, match="mode must be one of"):
        env_for(big, mode="oracle")


def test_image_cache_decodes_once_and_reloads_changed_files(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(path)
    cache = ImageCache(max_items=2)
    first = cache.load(path)
    assert cache.load(path) is first and first.mode == "RGB" and first.size == (40, 30)
    Image.fromarray(np.full((30, 40, 3), 200, dtype=np.uint8)).save(path)
    os.utime(path, ns=(1, 1))  # a different mtime, whatever the file system's clock resolution
    reloaded = cache.load(path)
    assert reloaded is not first and np.asarray(reloaded)[0, 0, 0] == 200


def test_image_cache_evicts_least_recently_used(tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((8, 8, 3), i, dtype=np.uint8)).convert("L").save(paths[-1])
    cache = ImageCache(max_items=2)
    zero = cache.load(paths[0])
    assert zero.mode == "RGB"  # grey images are converted
    cache.load(paths[1])
    cache.load(paths[0])  # 0 is now the most recent, so loading 2 evicts 1
    cache.load(paths[2])
    assert len(cache) == 2 and cache.load(paths[0]) is zero
    with pytest.raises(ValueError, match=">= 1"):
        cache.set_max_items(0)
    with pytest.raises(FileNotFoundError, match="missing.png does not exist"):
        cache.load(tmp_path / "missing.png")


def test_prompts_carry_the_tool_options_and_display_size(big):
    sample = make_sample(big[0])
    text = question_text(sample, (1008, 756))
    assert "What colour is the sign?\nOptions:\nA. red\nB. blue\nC. green\nD. white\n" in text
    assert "The image is 1008 x 756 pixels." in text
    system = system_prompt()
    assert f'"name": "{TOOL_NAME}"' in system and "<tools>" in system and "</tools>" in system
    assert '<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [x1, y1, x2, y2]}}</tool_call>' in system
    assert "<answer>" in system and "<tools>" not in system_prompt(tools=False)
    messages = initial_messages(sample, (1008, 756))
    assert [m["role"] for m in messages] == ["system", "user"]
    assert [item["type"] for item in messages[1]["content"]] == ["image", "text"]


def test_free_form_prompts_ask_for_a_short_answer(big):
    sample = dataclasses.replace(make_sample(big[0]), options=(), answer="red")
    text = question_text(sample, (1008, 756))
    assert "Options" not in text and "letter" not in text and "short final answer" in text
    system = initial_messages(sample, (1008, 756))[0]["content"][0]["text"]
    assert "short final answer" in system and "letter" not in system
    assert observation_text(None, 1, free_form=True) == REMINDER.replace("LETTER", "ANSWER")
    assert observation_text(None, 0, free_form=True) == FINAL_REMINDER.replace("LETTER", "ANSWER")
    assert observation_text(None, 1, tools=False, free_form=True) == DIRECT_REMINDER.replace("LETTER", "ANSWER")
    multiple_choice = initial_messages(make_sample(big[0]), (1008, 756))[0]["content"][0]["text"]
    assert "letter of the correct option" in multiple_choice


# ----------------------------------------------------------------------------------------------------------------
# Prompt presets: a compared method prompted and read as its own evaluation does (paper Sec. 5.1)

def test_deepeyes_preset_prompts_as_deepeyes_and_ends_at_its_answer(big):
    deepeyes = preset("deepeyes")
    path, _ = big
    system, user = deepeyes.messages(make_sample(path), (512, 512), True)
    assert system["content"][0]["text"].startswith("You are a helpful assistant.\n\n# Tools\n")
    assert '"required":["bbox"]' in system["content"][0]["text"]           # DeepEyes' schema, verbatim
    # DeepEyes' user turn: "Question:", the options after a line break, no image size, its instruction
    assert user["content"][1]["text"] == (
        "Question: What colour is the sign?\nOptions: \nA. red\nB. blue\nC. green\nD. white\n\n"
        "\nThink first, call **image_zoom_in_tool** if needed, then answer. Format strictly as:  <think>...</think>  "
        "<tool_call>...</tool_call> (if tools needed)  <answer>...</answer> ")
    env = env_for(big, preset=deepeyes)
    crop = env.step(zoom(100, 50, 128, 64))
    assert crop.text == DEEPEYES_INSTRUCTION                                  # repeated in every tool response
    # an answer beside a tool call ends DeepEyes' episode with that answer; our own rule makes the turn invalid
    both = "<think>x</think><answer>B</answer>" + zoom(0, 0, 64, 64)[len("<think>zoom</think>"):]
    assert env.step(both).done and env.outcome().answer == "B" and env.outcome().format_ok
    ours = env_for(big)
    assert not ours.step(both).done and ours.events[0]["kind"] == "invalid"
    with pytest.raises(ValueError, match="unknown prompt preset 'cof'.*deepeyes"):
        preset("cof")
