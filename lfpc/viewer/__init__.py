"""The trajectory viewer: what a run saves for it (:mod:`.capture`), and the static HTML report
(``python -m lfpc.viewer RUN_OR_EVAL_DIR``)."""
