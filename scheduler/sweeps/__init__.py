"""Sweeps (`flow sweep`): Optuna studies whose trials are flowlib runs sharing the node cache.

space (the search space) -> start (checks, study, record) -> loop (ask, launch, prune, tell)
over launch (where trials run); read holds the read models of status, best and the UI.
"""
