"""The training pipeline as plain Python: the stages, their chain, the hand-over between
them and the run summary.

Owns the ``Stage`` names and ``PipelineParams``. May import every other package of
``mlops``: it is the one place that strings the subsystems together.
"""
