"""lm-eval's own command line with the "neo" model registered: `python -m neo.eval --model neo --model_args run=DIR
--tasks lambada_openai` takes every `lm_eval` option.

lm-eval looks models up in its registry only (no entry points for outside packages), so `lm_eval --model neo` alone
cannot find neo; this module imports `neo.eval.harness` (which registers "neo") and then runs lm-eval's CLI.
"""

from __future__ import annotations


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    import neo.eval.harness  # noqa: F401  (registers "neo")

    cli_evaluate()


if __name__ == "__main__":
    main()
