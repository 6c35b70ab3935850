"""The training engine, apart from the search: run configurations, the loop, devices,
evaluation and cross-validation. Knows nothing of Optuna."""
