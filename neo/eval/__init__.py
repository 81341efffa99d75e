"""Evaluation of a trained model: LAMBADA from a local file (`lambada`), and any lm-evaluation-harness task through
`neo eval RUN --tasks ...` (the `eval` extra).

`harness` is the lm-eval model ("neo"), `scoring` the batched log-likelihood forward pass, `tasks` the checked task
loading and the run, `results` the JSON and TensorBoard output. Nothing is imported here: lm-eval is optional.
"""
