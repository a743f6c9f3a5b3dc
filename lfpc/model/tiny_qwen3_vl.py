"""What a tiny random Qwen3-VL (:func:`lfpc.model.tiny.build_tiny_model` with ``family="qwen3_vl"``) has of its own:
the added tokens, chat template, image processor settings and a scaled-down config of the real architecture
(DeepStack vision features, interleaved M-RoPE). The tokenizer is built as the tiny Qwen2.5-VL's
(:func:`lfpc.model.tiny_tokenizer.build_tiny_tokenizer`).

Sources: the added tokens after Qwen2.5's (``<tool_response>``, ``</tool_response>``, ``<think>``, ``</think>``,
ids 151665-151668 in the real vocabulary), the image processor settings (16 px patches, 2x2 merge, mean and std
0.5) and the chat template follow the Qwen3-VL-8B-Instruct release (Hugging Face ``Qwen/Qwen3-VL-8B-Instruct``:
``tokenizer_config.json``, ``preprocessor_config.json``, ``chat_template.json``); the template below is its
Instruct template (ChatML turns, ``render_content`` placing ``<|vision_start|><|image_pad|><|vision_end|>`` per image,
Hermes ``<tool_call>`` rendering, tool turns as ``<tool_response>`` user turns, no default system prompt, no
``<think>`` added by the generation prompt). A real checkpoint folder always brings its own template, which is what
the codec renders at run time; ``tests/test_backbones.py`` checks the codec against whichever template the folder has.
The architecture: transformers 5.19.0 ``models/qwen3_vl/configuration_qwen3_vl.py`` (real 8B: head_dim 128,
``mrope_section`` [24, 20, 20], ``mrope_interleaved``, ``deepstack_visual_indexes`` [8, 16, 24]).
"""

from __future__ import annotations

from transformers import Qwen2Tokenizer, Qwen3VLConfig

from lfpc.model.tiny_tokenizer import QWEN_ADDED_TOKENS, build_tiny_tokenizer

ADDED_TOKENS: tuple[tuple[str, bool], ...] = QWEN_ADDED_TOKENS + (
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)

CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) %}\n"
    "{%- set video_count = namespace(value=0) %}\n"
    "{%- macro render_content(content, do_vision_count) %}\n"
    "    {%- if content is string %}\n"
    "        {{- content }}\n"
    "    {%- else %}\n"
    "        {%- for item in content %}\n"
    "            {%- if 'image' in item or 'image_url' in item or item.type == 'image' %}\n"
    "                {%- if do_vision_count %}\n"
    "                    {%- set image_count.value = image_count.value + 1 %}\n"
    "                {%- endif %}\n"
    "                {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}\n"
    "                <|vision_start|><|image_pad|><|vision_end|>\n"
    "            {%- elif 'video' in item or item.type == 'video' %}\n"
    "                {%- if do_vision_count %}\n"
    "                    {%- set video_count.value = video_count.value + 1 %}\n"
    "                {%- endif %}\n"
    "                {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}\n"
    "                <|vision_start|><|video_pad|><|vision_end|>\n"
    "            {%- elif 'text' in item %}\n"
    "                {{- item.text }}\n"
    "            {%- endif %}\n"
    "        {%- endfor %}\n"
    "    {%- endif %}\n"
    "{%- endmacro %}\n"
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    "        {{- render_content(messages[0].content, false) + '\\n\\n' }}\n"
    "    {%- endif %}\n"
    "    {{- \"# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided "
    "with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + render_content(messages[0].content, false) + '<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- set content = render_content(message.content, True) %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + content }}\n"
    "        {%- if message.tool_calls %}\n"
    "            {%- for tool_call in message.tool_calls %}\n"
    "                {%- if (loop.first and content) or (not loop.first) %}\n"
    "                    {{- '\\n' }}\n"
    "                {%- endif %}\n"
    "                {%- if tool_call.function %}\n"
    "                    {%- set tool_call = tool_call.function %}\n"
    "                {%- endif %}\n"
    "                {{- '<tool_call>\\n{\"name\": \"' }}\n"
    "                {{- tool_call.name }}\n"
    "                {{- '\", \"arguments\": ' }}\n"
    "                {%- if tool_call.arguments is string %}\n"
    "                    {{- tool_call.arguments }}\n"
    "                {%- else %}\n"
    "                    {{- tool_call.arguments | tojson }}\n"
    "                {%- endif %}\n"
    "                {{- '}\\n</tool_call>' }}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if loop.first or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

# Image processor settings of the real checkpoint (preprocessor_config.json); the processor class is the same
# Qwen2VLImageProcessor as Qwen2.5-VL's, with 16 px patches.
PREPROCESSOR_CONFIG = {
    "size": {"shortest_edge": 65536, "longest_edge": 16777216},
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen3VLProcessor",
}


def build_tokenizer() -> Qwen2Tokenizer:
    """The tiny byte-level BPE tokenizer with Qwen3-VL's added tokens and chat template."""
    return build_tiny_tokenizer(added_tokens=ADDED_TOKENS, chat_template=CHAT_TEMPLATE)


def tiny_config(tokenizer: Qwen2Tokenizer) -> Qwen3VLConfig:
    """A Qwen3-VL config of the real architecture scaled down (two DeepStack layers, interleaved M-RoPE), ids
    matching ``tokenizer``."""
    ids = {text: tokenizer.convert_tokens_to_ids(text) for text, _ in ADDED_TOKENS}
    text_config = {
        "vocab_size": -(-len(tokenizer) // 64) * 64,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 32,  # vLLM's CPU attention needs head size >= 32
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        # Real model: head_dim 128, mrope_section [24, 20, 20]; here the same split of head_dim / 2 = 16.
        "rope_parameters": {"rope_type": "default", "rope_theta": 5e6, "mrope_section": [6, 5, 5],
                            "mrope_interleaved": True},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision_config = {
        "depth": 3,
        "hidden_size": 32,
        "num_heads": 2,
        "intermediate_size": 64,
        "out_hidden_size": 64,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 256,
        "deepstack_visual_indexes": [0, 1],
    }
    return Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
