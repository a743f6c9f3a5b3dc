"""Plan a run's GPU memory and step time before any weights load: ``python -m lfpc.plan <train.py overrides>``.

The update and old-log-prob passes are *run* (the project's own code, on the config's model built from
``config.json`` alone on fake tensors, FSDP2-sharded over a fake process group of the config's world size) and
measured by torch's memory tracker; the rollout engine follows vLLM's memory rule; step time is FLOPs at a stated
MFU. Figures from it are planned, not measured on a GPU.
"""
