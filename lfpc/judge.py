"""Optional judge for free-form answers no rule can grade: a local model, its verdicts cached on disk.

DeepEyes grades open-ended answers with an LLM judge; the paper only says the answer must match the ground
truth (paper Sec. 4.1). The judge is off unless one is passed to :func:`lfpc.answers.is_correct`, and it only
ever runs a local model through the project's own rollout engine, never a network service.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from lfpc.answers import Judge
from lfpc.files import entry_lock
from lfpc.jsonl_log import JsonlError, append_json_lines, read_json_lines
from lfpc.model.loading import load_model, model_fingerprint
from lfpc.rollout.base import RolloutEngine, SamplingConfig
from lfpc.rollout.codec import ChatCodec
from lfpc.rollout.hf import HFRolloutEngine
from lfpc.special_tokens import defuse_special_tokens

JUDGE_PROMPT = ("Decide whether a model's answer to a question means the same as the reference answer.\n"
                "Question: {question}\nReference answer: {truth}\nModel answer: {answer}\n"
                "Reply with one word: yes or no.")


class CachedJudge:
    """Wraps a judge with a JSONL file of past verdicts, so no (judge, question, truth, answer) is judged twice.

    ``identity`` names the judge (e.g. its model's fingerprint): a verdict of one judge is never returned for
    another. The file may be shared by processes (ranks, runs): its reads and appends hold its lock, a torn last line
    (a killed write) is dropped, and a garbage line is refused with the file and line."""

    def __init__(self, judge: Judge, path: str | Path, identity: str = "") -> None:
        self.judge = judge
        self.path = Path(path)
        self.identity = identity
        self.verdicts: dict[str, bool] = {}
        if self.path.is_file():
            with entry_lock(self.path, wait=True):
                rows = read_json_lines(self.path)
            for number, row in rows:
                if not isinstance(row.get("key"), str) or not isinstance(row.get("correct"), bool):
                    raise JsonlError(f"{self.path}:{number}: not a judge verdict (no string 'key' and boolean "
                                     "'correct'); delete or fix the line")
                self.verdicts[row["key"]] = row["correct"]

    def key(self, question: str, truth: str, answer: str) -> str:
        """Stable cache key of one judgement by this judge."""
        return hashlib.sha256(json.dumps([self.identity, question, truth, answer]).encode("utf-8")).hexdigest()

    def __call__(self, question: str, truth: str, answer: str) -> bool:
        key = self.key(question, truth, answer)
        if key not in self.verdicts:
            self.verdicts[key] = bool(self.judge(question, truth, answer))
            with entry_lock(self.path, wait=True):
                append_json_lines(self.path, [{"key": key, "correct": self.verdicts[key], "judge": self.identity,
                                               "question": question, "truth": truth, "answer": answer}])
        return self.verdicts[key]


class EngineJudge:
    """Asks a local chat model, through a rollout engine and its chat codec, for a greedy yes/no verdict."""

    def __init__(self, engine: RolloutEngine, codec: ChatCodec, max_new_tokens: int = 4) -> None:
        self.engine = engine
        self.codec = codec
        self.sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0,
                                       stop_token_ids=codec.stop_token_ids, suppress_token_ids=codec.vision_token_ids)

    def __call__(self, question: str, truth: str, answer: str) -> bool:
        # the answer is model output (and a free-form truth is not checked at load): a special token in either must
        # not open a turn in the judge's prompt
        text = JUDGE_PROMPT.format(**{name: defuse_special_tokens(value) for name, value in
                                      (("question", question), ("truth", truth), ("answer", answer))})
        context = self.codec.start([{"role": "user", "content": [{"type": "text", "text": text}]}], [])
        completion = self.engine.generate([context], self.sampling)[0]
        return self.codec.decode(completion.token_ids).strip().lower().startswith("yes")


def load_judge(model: str | Path, cache: str | Path, device: str | torch.device = "cpu",
               dtype: str = "bfloat16") -> CachedJudge:
    """A cached :class:`EngineJudge` on the local Qwen2.5-VL folder ``model`` (never downloaded: a missing folder
    raises), generating with the project's HF rollout engine on ``device``."""
    if not Path(model).is_dir():
        raise FileNotFoundError(f"judge.model {model}: not a local model folder (the judge never downloads)")
    codec = ChatCodec.for_model(str(model), max_tokens=4)
    engine = HFRolloutEngine(load_model(model, dtype=dtype).to(device), codec.pad_id, codec.image_pad_id)
    return CachedJudge(EngineJudge(engine, codec), cache, identity=model_fingerprint(model))
