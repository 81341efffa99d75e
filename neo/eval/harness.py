"""neo as an lm-evaluation-harness model: `NeoLM`, registered under the name "neo".

lm-eval asks a model for three things; each runs on neo's own batched, sharded machinery:
- `loglikelihood` (multiple choice, cloze): lm-eval's `TemplateLM` tokenizes (context, continuation) exactly as its
  Hugging Face backend does; `neo.eval.scoring` scores the batches.
- `loglikelihood_rolling` (perplexity): lm-eval's disjoint rolling windows of n_ctx tokens, all windows of all
  documents scored together in length-sorted batches, summed per document.
- `generate_until`: neo's KV-cache decoder (`neo.model.decode.generate`), greedy unless the task samples; contexts
  keep their last n_ctx - max_gen_toks tokens, and the text is cut at the first stop string (or end-of-text).

lm-eval finds models in its own registry only (no entry points), so this module must be imported before lm-eval
looks "neo" up: `neo eval --tasks` does that, and `python -m neo.eval ...` is lm-eval's own command line with it
done (see neo/eval/__main__.py).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval fills its registry on first lookup only while it is empty)
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from neo.errors import ConfigError
from neo.eval.scoring import loglikelihoods
from neo.infer.sampling import Loaded, load_for_sampling, mesh_for_sampling

DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's Hugging Face backend's default


def _batch_size(value: Any) -> int:
    """lm-eval passes batch sizes as strings (or "auto", or None): neo pads to a fixed size, so it needs a number."""
    if value is None or value == "auto" or (isinstance(value, str) and value.startswith("auto")):
        return DEFAULT_BATCH_SIZE
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"batch_size={value!r}: pass a positive integer (rows per batch)") from None
    if size < 1:
        raise ConfigError(f"batch_size={size}: pass a positive integer (rows per batch)")
    return size


@register_model("neo")
class NeoLM(TemplateLM):
    """A neo run directory (or a HF GPT-Neo directory) as an lm-eval model.

    model_args: run=DIR (required), mesh=run|SHAPE and layout=... (as `neo sample --mesh/--layout`; default one
    device), max_gen_toks=N (default 256), seed=N (sampling tasks).
    """

    def __init__(
        self,
        run: str | None = None,
        batch_size: int | str | None = None,
        mesh: str | None = None,
        layout: str | None = None,
        max_gen_toks: int | str = DEFAULT_MAX_GEN_TOKS,
        seed: int | str = 0,
        loaded: Loaded | None = None,
        **unused: Any,  # lm-eval's device / max_batch_size: placement comes from `mesh`
    ) -> None:
        super().__init__()
        if loaded is None:
            if not run:
                raise ConfigError("the neo model needs model_args run=DIR (a neo run directory or a HF GPT-Neo dir)")
            loaded = load_for_sampling(run, *mesh_for_sampling(run, mesh, layout))
        self.loaded = loaded
        self.run = run
        self.batch_size = _batch_size(batch_size)
        self.max_gen_toks = int(max_gen_toks)
        self.seed = int(seed)
        self.tokenizer = loaded.tokenizer
        self.vocab_size = max(self.tokenizer.get_vocab(with_added_tokens=True).values()) + 1
        if loaded.eos_id is None:
            raise ConfigError("the run's tokenizer has no end-of-text token; lm-eval needs one (<|endoftext|>)")

    @property
    def eot_token_id(self) -> int:
        return int(self.loaded.eos_id)  # type: ignore[arg-type]

    @property
    def max_length(self) -> int:
        return self.loaded.model.n_ctx

    @property
    def tokenizer_name(self) -> str:
        return "neo-" + (self.run or "run").replace("/", "__")

    def get_model_info(self) -> dict[str, Any]:
        cfg = self.loaded.model
        return {"neo_run": self.run, "n_ctx": cfg.n_ctx, "n_layer": cfg.n_layer, "n_embd": cfg.n_embd}

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.tokenizer.encode(string).ids

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    def _score(self, pairs: list[tuple[list[int], list[int]]], disable_tqdm: bool) -> list[tuple[float, bool]]:
        bar = tqdm(total=len(pairs), disable=disable_tqdm, desc="neo: scoring")
        try:
            return loglikelihoods(
                self.loaded.model,
                self.loaded.params,
                pairs,
                batch_size=self.batch_size,
                mesh=self.loaded.mesh,
                rules=self.loaded.rules,
                on_batch=bar.update,
            )
        finally:
            bar.close()

    def _loglikelihood_tokens(self, requests: list, disable_tqdm: bool = False, **kwargs: Any) -> list:
        results = self._score([(ctx, cont) for _, ctx, cont in requests], disable_tqdm)
        for (key, _, _), result in zip(requests, results, strict=True):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        windows, owner = [], []
        for index, (string,) in enumerate(req.args for req in requests):
            for window in get_rolling_token_windows(
                token_list=self.tok_encode(string),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            ):
                windows.append(make_disjoint_window(window))
                owner.append(index)
        totals = [0.0] * len(requests)
        for index, (logprob, _) in zip(owner, self._score(windows, disable_tqdm), strict=True):
            totals[index] += logprob
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        import flax.linen as nn

        from neo.model.decode import for_decoding, generate

        # laid out for decoding once per call, not once per batch (a second copy of the weights while it runs)
        decode_cfg, decode_params = for_decoding(self.loaded.model, nn.meta.unbox(self.loaded.params))
        groups: dict[str, list[int]] = defaultdict(list)  # one decoding setting per group, as lm-eval's backends
        for i, req in enumerate(requests):
            groups[json.dumps(req.args[1], sort_keys=True, default=str)].append(i)
        eos_text = self.tokenizer.decode([self.eot_token_id], skip_special_tokens=False)
        outputs: list[str] = [""] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="neo: generating")
        for indices in groups.values():
            kwargs = normalize_gen_kwargs(requests[indices[0]].args[1], self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
            max_gen = int(kwargs.pop("max_gen_toks"))
            room = self.max_length - max_gen
            if room <= 0:
                raise ConfigError(
                    f"max_gen_toks {max_gen} leaves no room for a prompt in n_ctx {self.max_length}; ask for fewer"
                )
            sampled = bool(kwargs.get("do_sample")) and float(kwargs.get("temperature") or 1.0) > 0
            prompts = {i: (self.tok_encode(requests[i].args[0]) or [self.eot_token_id])[-room:] for i in indices}
            order = sorted(indices, key=lambda i: -len(prompts[i]))
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                batch = [prompts[i] for i in chunk]
                batch += [batch[-1]] * (self.batch_size - len(batch))  # a fixed batch shape: one compile per bucket
                new = generate(
                    decode_cfg,
                    decode_params,
                    batch,
                    max_new_tokens=max_gen,
                    temperature=float(kwargs.get("temperature") or 1.0) if sampled else 0.0,
                    top_k=int(kwargs.get("top_k") or 0),
                    top_p=float(kwargs.get("top_p") or 1.0),
                    eos_id=self.eot_token_id,
                    seed=self.seed + start,
                    mesh=self.loaded.mesh,
                    rules=self.loaded.rules,
                    vocab_size=self.vocab_size,
                )
                for i, ids in zip(chunk, new, strict=False):
                    text = postprocess_generated_text(self.tok_decode(ids), stop=until, think_end_token=None)
                    outputs[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                bar.update(len(chunk))
        bar.close()
        return outputs
