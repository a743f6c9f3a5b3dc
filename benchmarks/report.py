"""The plain-text report of :mod:`benchmarks.bench` results (figures, shares and ratios, one section per question)."""

from __future__ import annotations

from benchmarks.instrument import HOST_CATEGORIES

OUTSIDE_MODEL_TARGET = 0.05  # share of rollout wall time outside the model, at paper image sizes


def format_report(results: dict) -> str:
    """All sections of the report as one string."""
    lines = _header(results)
    steps = results["steps"]
    lines += _rollout_section(results, steps)
    lines += _step_section(results, steps)
    lines += _image_section(results, steps)
    lines += _mfu_section(results, steps)
    return "\n".join(lines)


def _table(header: list[str], rows: list[list]) -> list[str]:
    cells = [header] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells]


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"


def _header(results: dict) -> list[str]:
    m, s, model = results["machine"], results["settings"], results["model"]
    gpu = m["gpu"] or "no GPU"
    backends = "; ".join(f"{'vLLM' if name == 'vllm' else name}: {status}"
                         for name, status in results["backends"].items())
    return [
        "LFPC benchmarks",
        f"command : {results['command']}",
        f"machine : {m['platform']}, {m['cpu']}, {m['cpu_cores']} cores (torch {m['torch_threads']} threads), {gpu}; "
        f"python {m['python']}, torch {m['torch']}, transformers {m['transformers']}",
        f"load    : 1-min load average {m['load_average']:.1f} at start, {m['load_average_end']:.1f} at end "
        "(a shared machine makes timings noisy)",
        f"model   : {model['arch']} Qwen2.5-VL, random weights, {_params(model['total_params'])} params (multiplying "
        f"each text token {_params(model['text_params'])}, each image patch {_params(model['vision_params'])}), "
        f"{model['dtype']} on {model['device']}",
        f"workload: {s['samples']} prompt(s) per step, {s['image_size'][0]}x{s['image_size'][1]} synthetic JPEG, "
        f"{s['crops']} zoom-in(s) + answer per episode (scripted), crops at {s['crop_tokens']} tokens, "
        f"{s['new_tokens']} generated tokens per turn",
        f"backends: {backends}",
    ]


def _rollout_section(results: dict, steps: list[dict]) -> list[str]:
    budget = results["settings"]["budgets"][0]
    rows = [r for r in steps if r["budget"] == budget]
    lines = ["", f"== 1. Rollout throughput (multi-turn crop rollouts, global image at {budget} tokens) =="]
    lines += _table(["backend", "group", "traj", "turns", "crops", "rollout_s", "traj/s", "gen_tok/s", "model_s",
                     "outside_model_share"],
                    [[r["backend"], r["group"], r["trajectories"], r["turns"], r["crops"], r["rollout_s"],
                      r["traj_per_s"], r["gen_tokens_per_s"], r["model_s"], r["outside_model_share"]] for r in rows])
    by_key = {(r["backend"], r["group"]): r for r in rows}
    ratios = [f"group {g}: x{by_key['vllm', g]['traj_per_s'] / by_key['hf', g]['traj_per_s']:.2f}"
              for (backend, g) in by_key if backend == "hf" and ("vllm", g) in by_key]
    vllm = results["backends"].get("vllm", "not requested")
    lines.append("vLLM / transformers trajectories/s: " + (", ".join(ratios) if ratios else f"n/a (vLLM: {vllm})"))
    lines += ["", f"Share of rollout wall time outside the model, by category (target < {OUTSIDE_MODEL_TARGET} at "
                  "paper image sizes; categories add up the time of every host thread, so with image work on "
                  "several threads they can sum past the total):"]
    table = []
    for r in steps:
        named = sum(r["host_s"].values())
        other = max(r["outside_model_s"] - named, 0.0) / r["rollout_s"]
        table.append([r["backend"], r["budget"], r["group"], *(r["host_share"][k] for k in HOST_CATEGORIES),
                      other, r["outside_model_share"], "yes" if r["outside_model_share"] < OUTSIDE_MODEL_TARGET
                      else "no", r["outside_model_s"] / r["trajectories"]])
    lines += _table(["backend", "budget", "group", *HOST_CATEGORIES, "other", "total", "under_target",
                     "outside_s/traj"], table)
    return lines


def _step_section(results: dict, steps: list[dict]) -> list[str]:
    budgets = results["settings"]["budgets"]
    lines = ["", "== 2. GRPO step time (weight sync / rollout / log-prob pass / update) =="]
    lines += _table(["backend", "budget", "group", "traj", "seq_tokens", "sync_s", "rollout_s", "logprob_s",
                     "update_s", "step_s", "sync%", "rollout%", "logprob%", "update%"],
                    [[r["backend"], r["budget"], r["group"], r["trajectories"], r["seq_tokens"], r["sync_s"],
                      r["rollout_s"], r["logprob_s"], r["update_s"], r["step_s"],
                      *(r["phase_share"][k] for k in ("sync", "rollout", "logprob", "update"))] for r in steps])
    for backend in dict.fromkeys(r["backend"] for r in steps):
        mine = [r for r in steps if r["backend"] == backend]
        small = sorted((r for r in mine if r["budget"] == budgets[0]), key=lambda r: r["group"])
        if len(small) > 1:
            lo, hi = small[0], small[-1]
            lines.append(f"{backend}: group {lo['group']} -> {hi['group']} at budget {budgets[0]} "
                         f"(x{hi['group'] / lo['group']:.0f} trajectories): {_growth(hi, lo)}")
        for r in mine:
            base = next((b for b in small if b["group"] == r["group"]), None)
            if r["budget"] != budgets[0] and base:
                lines.append(f"{backend}: budget {budgets[0]} -> {r['budget']} tokens at group {r['group']}: "
                             f"{_growth(r, base)}")
    return lines


def _growth(hi: dict, lo: dict) -> str:
    """Step-time ratio of two step results, with the ratios of their phases and sequence tokens."""
    phases = ", ".join(f"{k} x{hi[f'{k}_s'] / lo[f'{k}_s']:.2f}" for k in ("rollout", "logprob", "update"))
    return (f"step time x{hi['step_s'] / lo['step_s']:.2f} ({phases}; "
            f"sequence tokens x{hi['seq_tokens'] / lo['seq_tokens']:.2f})")


def _image_section(results: dict, steps: list[dict]) -> list[str]:
    ops = results["image_ops"]
    sec = ops["seconds"]
    width, height = ops["image_size"]
    lines = ["", f"== 3. Image path (one {width}x{height} JPEG) =="]
    lines.append(f"single operations: JPEG decode {sec['decode']:.3f} s; crop (a quarter of the area) "
                 f"{sec['crop']:.3f} s, resized to the crop budget {sec['resize_crop']:.3f} s, processor "
                 f"{sec['processor_crop']:.3f} s")
    for budget in results["settings"]["budgets"]:
        lines.append(f"global view at {budget} tokens: resize {sec[f'resize_global_{budget}']:.3f} s, processor "
                     f"{sec[f'processor_global_{budget}']:.3f} s (once per prompt per step, shared by its group)")
    lines.append("per rollout (decodes start from a cold cache; processor calls = prompts + crops when the global "
                 "view is encoded once per prompt):")
    lines += _table(["backend", "budget", "group", "samples", "crops", "decodes", "processor_calls",
                     "per_turn_decode_s", "per_turn_decode_share"],
                    [[r["backend"], r["budget"], r["group"], r["samples"], r["crops"], r["jpeg_decodes"],
                      r["calls"]["processor"], r["crops"] * sec["decode"],
                      r["crops"] * sec["decode"] / r["rollout_s"]] for r in steps])
    lines.append("(per_turn_decode_*: what decoding the original again for every crop would add to the rollout)")
    pressure = results.get("cache_pressure")
    if pressure:
        verdict = ("OK: one decode per prompt" if pressure["decodes"] <= pressure["samples"]
                   else "REGRESSION: the original is decoded again per crop")
        lines.append(f"cache pressure (image cache of {pressure['cache_items']} image, {pressure['samples']} prompts "
                     f"x group {pressure['group']}, episodes interleaved): {pressure['decodes']} JPEG decodes for "
                     f"{pressure['crops']} crops -> {verdict}")
    return lines


def _mfu_section(results: dict, steps: list[dict]) -> list[str]:
    model = results["model"]
    lines = ["", "== 4. Model FLOPs utilisation (forward: weights 2 x params per token/patch + attention; "
                 "update = 3 x forward) ==",
             f"peak: {model['peak_flops'] / 1e12:.4g} TFLOP/s ({model['peak_source']})"]
    lines += _table(["backend", "budget", "group", "seq_tokens", "patches", "update_tok/s", "update_MFU",
                     "logprob_MFU"],
                    [[r["backend"], r["budget"], r["group"], r["seq_tokens"], r["patches"], r["update_tokens_per_s"],
                      r["update_mfu"], r["logprob_mfu"]] for r in steps])
    return lines
