"""Performance benchmarks of LFPC (rollout throughput, GRPO step time, image-path cost); see BENCHMARKS.md."""
