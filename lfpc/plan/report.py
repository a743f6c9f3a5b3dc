"""A run's plan: memory per rank of each phase against the declared GPU, headroom, the knob to turn when it does
not fit, and the step-time estimate; as text for people and a dict for files."""

from __future__ import annotations

from dataclasses import dataclass

from lfpc.plan.memory import MemoryPlan
from lfpc.plan.rollout import RolloutPlan
from lfpc.plan.step_time import StepTime
from lfpc.plan.trajectories import Workload

GIB = 2 ** 30


@dataclass(frozen=True)
class Plan:
    """Everything planned for one configured launch (bytes per rank)."""

    world_size: int
    gpu: str
    gpu_bytes: int
    reserved: int            # outside torch's tensors (CUDA context, NCCL, an asleep engine)
    min_headroom: float
    worst: Workload
    memory: MemoryPlan
    rollout: RolloutPlan
    step: StepTime
    model_source: str

    def peaks(self) -> dict[str, int]:
        """Peak bytes per rank of each phase, everything on the GPU at that moment included."""
        resting = self.memory.resident_total + self.reserved
        return {"update": self.memory.update_peak + self.reserved,
                "old log-probs": self.memory.old_logprobs_peak + self.reserved,
                "rollout engine": resting + self.rollout.budget,
                "fixed state": resting}

    @property
    def limit(self) -> int:
        """The most a phase may take: the GPU's memory less the required headroom."""
        return int(self.gpu_bytes * (1 - self.min_headroom))

    def problems(self) -> list[str]:
        """Why this launch would fail, each with the knob to turn (empty: it fits)."""
        found = []
        peaks = self.peaks()
        gib = lambda b: f"{b / GIB:.1f} GiB"  # noqa: E731
        over = f"over {gib(self.limit)} ({1 - self.min_headroom:.0%} of {gib(self.gpu_bytes)}, plan.min_headroom)"
        if peaks["fixed state"] > self.limit:
            found.append(f"the fixed state ({gib(peaks['fixed state'])}) alone is {over}: shard over more ranks "
                         f"(trainer.devices, trainer.num_nodes) or train adapters only (+lora=default)")
        for phase in ("update", "old log-probs"):
            if peaks[phase] > self.limit and peaks["fixed state"] <= self.limit:
                found.append(f"the {phase} pass at {self.worst.context_tokens} tokens per row "
                             f"({gib(peaks[phase])}) is {over}: {self._row_knob(phase)}")
        if peaks["rollout engine"] > self.limit and peaks["fixed state"] <= self.limit:
            found.append(f"rollouts ({gib(peaks['rollout engine'])}: the trainer's {gib(peaks['fixed state'])} + the "
                         f"engine's {gib(self.rollout.budget)}) are {over}: lower rollout.gpu_memory_utilization")
        if self.rollout.kv_tokens < self.rollout.longest_sequence:
            found.append(f"the KV cache holds {self.rollout.kv_tokens} tokens, less than one "
                         f"{self.rollout.longest_sequence}-token sequence: raise rollout.gpu_memory_utilization or "
                         f"lower episode.max_context_tokens")
        return found

    def _row_knob(self, phase: str) -> str:
        """What lowers the peak of ``phase`` over worst-case rows, in the order to try it: one row per
        micro-batch, then (for the update) activation offload, then shorter rows."""
        m, tokens = self.memory, self.worst.context_tokens
        if m.worst_rows_together > 1:
            return (f"grpo.micro_batch_tokens={tokens} (each such row in a micro-batch of its own; now "
                    f"{m.worst_rows_together} rows share one)")
        if phase == "update" and not m.worst_offloaded:
            return (f"model.offload_min_tokens={tokens} (keeps such a row's saved activations in host memory "
                    f"until the backward)")
        return (f"a shorter episode.max_context_tokens (now {tokens}) or episode.crop_max_tokens (one row "
                f"already runs alone{', its activations offloaded' if m.worst_offloaded else ''}; the planner "
                f"knows no sequence parallelism)")

    @property
    def fits(self) -> bool:
        return not self.problems()

    def text(self) -> str:
        """The plan as a table per rank (planned, not measured)."""
        gib = lambda b: f"{b / GIB:6.1f} GiB"  # noqa: E731
        m, r, s, w = self.memory, self.rollout, self.step, self.worst
        lines = [f"Plan (planned, not measured) per rank of {self.world_size} x {self.gpu} "
                 f"({self.gpu_bytes / GIB:.1f} GiB), model {m.parameters / 1e9:.2f}B parameters "
                 f"from {self.model_source}",
                 f"worst-case rows: {w.context_tokens} tokens, images of {list(w.image_tokens)} visual tokens, "
                 f"{w.response_tokens} policy tokens; micro-batch {m.micro_batch_size}",
                 f"{'phase':<16}{'peak':>12}{'of GPU':>9}{'headroom':>10}"]
        for phase, peak in self.peaks().items():
            lines.append(f"{phase:<16}{gib(peak):>12}{peak / self.gpu_bytes:>9.0%}{1 - peak / self.gpu_bytes:>10.0%}")
        lines.append("fixed state: " + ", ".join(f"{k} {v / GIB:.2f} GiB" for k, v in m.resident.items())
                     + f", reserved {self.reserved / GIB:.1f} GiB (hardware.reserved_gib)")
        lines.append(f"update of a worst-case row: {m.worst_rows_together} row(s) per micro-batch, activations "
                     + (f"offloaded (host memory {m.update_host_peak / GIB:.1f} GiB per rank at most)"
                        if m.worst_offloaded else "kept on the GPU"))
        lines.append(f"rollout ({r.backend}): engine {r.budget / GIB:.1f} GiB = weights {r.weights / GIB:.1f} + "
                     f"activations/graphs {r.other / GIB:.1f} + KV {r.kv_bytes / GIB:.1f} GiB = {r.kv_tokens:,} "
                     f"tokens ({r.kv_bytes_per_token // 1024} KiB each); demand {r.live_sequences} live episodes x "
                     f"up to {r.longest_sequence:,} = {r.live_sequences * r.longest_sequence:,} tokens "
                     f"({min(r.kv_tokens // max(r.longest_sequence, 1), r.live_sequences)} longest at once)")
        lines.append(f"step time at MFU {s.mfu:.0%} (decode at {s.decode_bandwidth_share:.0%} of memory bandwidth), "
                     f"{s.trajectories} trajectories per rank of {s.workload.context_tokens} tokens "
                     f"({s.workload.response_tokens} policy): {s.total:,.0f} s = "
                     + " + ".join(f"{k} {v:,.0f} s" for k, v in s.seconds.items()))
        problems = self.problems()
        lines.append("FITS" if not problems else "DOES NOT FIT:\n  - " + "\n  - ".join(problems))
        return "\n".join(lines)
