"""rnri's lab (docs/architecture.md, "Layers"): benchmarks, evaluations, the analytic testbeds and the shapes world's
training. It lives in the repository, not in the installed package: run it from a checkout (``python -m rnri_lab.bench
...``); it may import anything in ``rnri``, and nothing in ``rnri`` imports it."""
