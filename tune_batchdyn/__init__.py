"""tune_batchdyn: batch-size and learning-rate search for Ray Tune and Optuna, steered by
training-dynamics measures (C̄K, LK, stable-rank quality, Hessian curvature, noise scale)."""

__version__ = "0.1.0"
