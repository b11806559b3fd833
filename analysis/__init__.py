"""Analysis of a tune_adder sweep: result frames -> pure extraction -> figures, claims, report.

Run `python analysis/plot_convergence.py [EXPERIMENT_DIR]`; Ray is never imported here.
"""
