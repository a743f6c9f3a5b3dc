"""Mutation check: does the suite catch small bugs in the method's core?

    python -m tests.mutations [NAME ...]      # python -m tests.mutations --list: the names

Copies the repository (the files git tracks or would track) to a temporary folder once, then for each mutation:
replaces one line there, runs the test files that should notice, and restores the line. A mutation is caught when
pytest reports failing tests (exit status 1); collection errors or crashes do not count. The unmutated copy must
pass those tests first. Prints one row per mutation (with the first failing test) and the kill rate; exits 1 unless
every mutation is caught.

Each pytest session runs in a child forked from this process after it imported torch, transformers and Lightning
(but nothing of lfpc), so a mutation costs its tests, not the ~10 s of imports; the child imports lfpc from the copy.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
PRELOAD = ("pytest", "torch", "numpy", "PIL.Image", "lightning.pytorch",
           "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl", "transformers.models.qwen2_5_vl.processing_qwen2_5_vl")


@dataclass(frozen=True)
class Mutation:
    """Replace ``old`` (found exactly once in ``path``) by ``new``; ``tests`` (files or test ids) should then fail."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


STEP = ("tests/test_training_step.py",)
MUTATIONS = (
    Mutation("advantage sign flipped before the update", "lfpc/training/module.py",
             "advantages = group_advantages(", "advantages = -group_advantages(", STEP),
    Mutation("one group for all rollouts of a step", "lfpc/training/module.py",
             "groups = torch.tensor([t.group for t in trajectories])",
             "groups = torch.zeros(len(trajectories), dtype=torch.long)", STEP),
    Mutation("group id = rollout index instead of prompt index", "lfpc/rollout/episodes.py",
             "group=e.index,", "group=episodes.index(e),", STEP),
    Mutation("rollout weights not synced", "lfpc/training/module.py",
             "        self.sync_rollout_weights()\n", "        pass\n", STEP),
    Mutation("weight sync pushes nothing", "lfpc/training/module.py",
             "self.engine.load_weights(policy_named_tensors(self.policy))", "self.engine.load_weights([])", STEP),
    Mutation("advantage sign flipped inside the update", "lfpc/grpo/update.py",
             "advantages[micro].to(device)", "-advantages[micro].to(device)", ("tests/test_update.py",)),
    Mutation("policy mask shifted by one", "lfpc/grpo/logprobs.py",
             'mask[:, 1:]', 'mask[:, :-1]', ("tests/test_rollout.py", "tests/test_update.py")),
    Mutation("TIS ratio inverted", "lfpc/grpo/update.py",
             'truncated_is_weights(old_lp, aligned["rollout_logprobs"],',
             'truncated_is_weights(aligned["rollout_logprobs"], old_lp,', ("tests/test_update.py",)),
    Mutation("KL term never computed", "lfpc/grpo/update.py",
             "if self.loss.kl_coef > 0 else None", "if False else None", ("tests/test_update.py",)),
    Mutation("FSDP2 gradients of the layers summed over ranks, not averaged", "lfpc/training/sharding.py",
             "fully_shard(block, mesh=mesh, mp_policy=policy)",
             "fully_shard(block, mesh=mesh, mp_policy=policy).set_gradient_divide_factor(1.0)",
             ("tests/test_fsdp2_update.py",)),
    Mutation("resume ignores the checkpoint", "lfpc/training/run.py",
             'ckpt_path=resume_path(cfg, out / "checkpoints")', "ckpt_path=None",
             ("tests/test_train_e2e.py::test_fsdp2_two_gloo_ranks_update_and_resume_from_the_distributed_checkpoint",)),
    Mutation("eval IoU against the largest GT box", "lfpc/evaluation/records.py",
             "gt_box = sample.boxes[0]", "gt_box = sample.boxes[-1]", ("tests/test_evaluation.py",)),
    Mutation("gt mode crops the largest GT box", "lfpc/agent/env.py",
             "box = self.sample.boxes[0]", "box = self.sample.boxes[-1]",
             ("tests/test_crop_env.py", "tests/test_evaluation.py")),
    Mutation("display-to-original with width and height swapped", "lfpc/agent/env.py",
             "display_size, original_size)", "display_size[::-1], original_size[::-1])",
             ("tests/test_crop_env.py",)),
    Mutation("display-to-original with the display's width and height swapped", "lfpc/agent/env.py",
             "display_size, original_size)", "display_size[::-1], original_size)", ("tests/test_crop_env.py",)),
    Mutation("CoF's crop not enlarged", "lfpc/agent/compared/cof.py", "ENLARGE = 1.5", "ENLARGE = 1.0",
             ("tests/test_compared_presets.py",)),
    Mutation("Pixel Reasoner's normalized boxes read as pixels", "lfpc/agent/compared/pixel_reasoner.py",
             "if all(value < 1 for value in box):", "if False:", ("tests/test_compared_presets.py",)),
    Mutation("a box on a crop mapped without the crop's offset", "lfpc/agent/env.py",
             "(left + x1, top + y1, left + x2, top + y2)", "(x1, y1, x2, y2)", ("tests/test_compared_presets.py",)),
    Mutation("resolution probe sampled at temperature 1", "lfpc/resolution/selection.py",
             "greedy = SamplingConfig(temperature=0.0)", "greedy = SamplingConfig(temperature=1.0)",
             ("tests/test_resolution.py",)),
    Mutation("resolution probe offers the crop tool", "lfpc/resolution/selection.py",
             'crop_mode="direct")', 'crop_mode="pred")', ("tests/test_resolution.py",)),
    Mutation("reward coverage measured on the largest GT box", "lfpc/rewards.py",
             "coverage(pred, gt_boxes[0]) < tau", "coverage(pred, gt_boxes[-1]) < tau", ("tests/test_rewards.py",)),
    Mutation("accuracy weighted with the tool weight", "lfpc/rewards.py",
             "cfg.w_acc * acc", "cfg.w_tool * acc", ("tests/test_rewards.py",)),
    Mutation("LoRA merge without its alpha / r scaling", "lfpc/model/lora.py",
             "(b.float() @ a.float()) * scaling", "(b.float() @ a.float())", ("tests/test_lora.py",)),
    Mutation("LoRA weight push leaves the adapters out", "lfpc/model/lora.py",
             'merged_weight(seen["W"], seen["A"], seen["B"], scalings[layer])', 'seen["W"]',
             ("tests/test_lora.py",)),
    Mutation("dynamic sampling keeps groups without a reward spread", "lfpc/training/dynamic_sampling.py",
             "not is_flat) for gid, is_flat", "True) for gid, is_flat", ("tests/test_dynamic_sampling.py",)),
    Mutation("dynamic sampling refills with the step's own prompts", "lfpc/training/batches.py",
             "if i not in used]", "]", ("tests/test_dynamic_sampling.py",)),
    Mutation("mm_token_type_ids zeroed (text-only M-RoPE positions)", "lfpc/rollout/inputs.py",
             "mm_token_type_ids = ((input_ids == image_pad_id) & attention_mask.bool()).int()",
             "mm_token_type_ids = torch.zeros_like(input_ids, dtype=torch.int)", ("tests/test_rollout.py",)),
    Mutation("a negated number graded as the number", "lfpc/answers.py",
             "    if _qualified_number(prediction):  #", "    if False:  #", ("tests/test_answers.py",)),
    Mutation("a negated yes/no graded as the yes/no", "lfpc/answers.py",
             "    if _NEGATION.search(folded):\n        return None\n", "", ("tests/test_answers.py",)),
)


def copy_repository(dest: Path) -> None:
    """Copy the files git tracks or would track (untracked, not ignored) from the repository to ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def run_tests(copy: Path, tests: tuple[str, ...], log: Path) -> int:
    """Exit status of pytest on ``tests`` in ``copy`` (stops at the first failure), run in a forked child that
    imports lfpc from ``copy``; its output goes to ``log``."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child never returns: it exits with pytest's status (3 if pytest itself could not run)
        code = 3
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(copy)
            sys.dont_write_bytecode = True  # a same-size mutation written within a second would reuse stale .pyc
            sys.path.insert(0, str(copy))
            os.environ.update(PYTHONPATH=str(copy), WANDB_MODE="offline")
            import pytest
            code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests]))
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def first_failure(log: Path) -> str:
    """The first failing (or erroring) test id in a pytest log."""
    found = re.search(r"^(?:FAILED|ERROR) (\S+)", log.read_text(errors="replace"), re.MULTILINE)
    return found.group(1) if found else "a test (see the pytest log)"


def check(mutations: tuple[Mutation, ...]) -> Iterator[tuple[Mutation, str, float]]:
    """Apply each mutation alone in one temporary copy; yields (mutation, first failing test or "", seconds)."""
    for module in PRELOAD:
        importlib.import_module(module)
    with tempfile.TemporaryDirectory(prefix="lfpc-mutations-") as tmp:
        copy, log = Path(tmp) / "repo", Path(tmp) / "pytest.log"
        copy_repository(copy)
        baseline = tuple(sorted({test for m in mutations for test in m.tests}))
        if run_tests(copy, baseline, log) != 0:
            raise SystemExit(f"the unmutated code fails {' '.join(baseline)}; fix that first:\n"
                             + log.read_text(errors="replace")[-3000:])
        for mutation in mutations:
            path = copy / mutation.path
            original = path.read_text()
            if original.count(mutation.old) != 1:
                raise SystemExit(f"{mutation.name}: {mutation.old!r} is not found exactly once in {mutation.path}")
            path.write_text(original.replace(mutation.old, mutation.new))
            start = time.perf_counter()
            try:
                caught = run_tests(copy, mutation.tests, log) == 1
            finally:
                path.write_text(original)
            yield mutation, first_failure(log) if caught else "", time.perf_counter() - start


def main(names: list[str]) -> int:
    """Run the mutations named in ``names`` (all when empty); print the table and the kill rate. ``--list`` prints
    the mutations' names and files, ``--help`` this module's description."""
    if names and names[0] in ("-h", "--help", "--list"):
        print(__doc__ if names[0] != "--list" else "\n".join(f"{m.path}: {m.name}" for m in MUTATIONS))
        return 0
    unknown = set(names) - {m.name for m in MUTATIONS}
    if unknown:
        raise SystemExit(f"unknown mutations {sorted(unknown)}; the names are those of MUTATIONS")
    chosen = tuple(m for m in MUTATIONS if not names or m.name in names)
    caught: list[bool] = []
    for mutation, failed, seconds in check(chosen):
        print(f"{'caught' if failed else 'MISSED':7} {seconds:4.0f} s  {mutation.path}: {mutation.name}"
              + (f"\n{'':15}by {failed}" if failed else ""), flush=True)
        caught.append(bool(failed))
    print(f"kill rate: {sum(caught)}/{len(caught)} ({100 * sum(caught) / len(caught):.0f}%)")
    return 0 if all(caught) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
