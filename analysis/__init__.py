"""Analysis of logged runs: training dynamics (Figures 5, 6) and the crop-substitution analysis, as importable
functions (``dynamics``, ``substitution``, ``wandb_log``) behind thin notebooks."""
