"""Evaluation through EleutherAI's lm-evaluation-harness (the `eval` extra): `neo eval RUN --tasks ...`.

`harness` is the lm-eval model ("neo"), `scoring` the batched log-likelihood forward pass, `tasks` the checked task
loading and the run, `results` the JSON and TensorBoard output. Nothing is imported here: lm-eval is optional.
"""
