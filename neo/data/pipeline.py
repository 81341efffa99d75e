"""The training input pipeline: token batches as a pure function of (seed, step).

`neo.data.tfrecord` reads and decodes the TFRecords (locally or from a bucket); numpy does the rest (sampling,
mixing, masking), because every choice here must be reproducible from the step number alone: restarting at step k
yields exactly the batches an uninterrupted run yields from step k on, without storing any iterator state in the
checkpoint.

How that works:
- Each dataset is an endless sequence of samples, epoch after epoch. Epoch lengths come from the dataset card, so a
  restart jumps to the right epoch for free and skips records (cheap: raw TFRecord reads, no parsing) inside it.
- Mixing draws which dataset fills each batch row from an RNG keyed on (seed, block of steps), so the number
  of samples each dataset has served before step k is a count over those draws, not a replay.
- Random choices (document order, random windows, masks) are keyed on (seed, dataset, epoch, index) the same way.
- The batch of a step is global: its rows are the same whatever the number of hosts, so a run preempted on one slice
  resumes on a slice of another size with the same data order. Each host reads the global stream and keeps the rows
  its devices hold (`rows`); the other rows' samples are read and dropped. That costs each host one global batch of
  decoding per step (a 512 x 2049 batch: ~1M tokens), small beside a step that size, and needs no shard-count to
  host-count rule (the original crashed with fewer files than processes).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from neo.data.card import DatasetCard, dataset_card
from neo.data.config import DataConfig, DatasetConfig
from neo.data.tfrecord import read_records
from neo.errors import ConfigError, DataError

__all__ = [
    "MlmBatch",
    "MlmOptions",
    "TrainData",
    "check_data",
    "dataset_card",
    "eval_batches",
    "mask_tokens",
    "mlm_train_batches",
    "train_batches",
]

_CACHE_TOKENS = 1 << 22  # datasets up to this many tokens (16 MiB) stay in memory after their first epoch
_MIX_BLOCK = 1024  # steps whose dataset choices come from one RNG draw
_MIX_SALT, _MLM_SALT, _ORDER_SALT, _WINDOW_SALT = 0x5EED, 0x4D4C4D, 0x0D0C, 0x71D0


@dataclass
class _Source:
    """One dataset: an endless, seekable sequence of samples of `length` tokens (the same on every host)."""

    card: DatasetCard
    files: list[str]
    mode: str
    length: int
    stitch: int
    shuffle_buffer: int
    seed: int
    index: int  # position among the mixed datasets, part of every RNG key
    cache: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def _read(self, files: list[str], skip: int) -> Iterator[np.ndarray]:
        """The records of `files` after `skip`; small datasets are read once and kept (bounded memory)."""
        if self.card.tokens > _CACHE_TOKENS:
            yield from read_records(files, skip)
            return
        for f in files:
            if f not in self.cache:
                self.cache[f] = list(read_records([f]))
        yield from itertools.islice(itertools.chain.from_iterable(self.cache[f] for f in files), skip, None)

    def samples_per_epoch(self) -> int:
        if self.mode == "chunks":
            return self.card.tokens // self.length
        return self.card.records // self.stitch

    def _fixed_records(self) -> bool:
        """Chunks-mode datasets have records of chunk_size+1 tokens (the very last may be shorter)."""
        return self.card.mode == "chunks" and self.card.chunk_size is not None

    # -- chunks: the token stream of one epoch, cut into `length` slices in order
    def _chunk_epoch(self, first: int) -> Iterator[np.ndarray]:
        n = self.samples_per_epoch()
        start = first * self.length
        if self._fixed_records():
            rec_len = self.card.chunk_size + 1  # type: ignore[operator]
            skip, drop = divmod(start, rec_len)
        else:  # variable-length records: find the record holding token `start` by reading lengths
            skip, drop = 0, start
        records = self._read(self.files, skip)
        buf = np.zeros(0, np.int32)
        produced = first
        for rec in records:
            if drop >= len(rec):
                drop -= len(rec)
                continue
            if drop:
                rec, drop = rec[drop:], 0
            buf = np.concatenate([buf, rec]) if buf.size else rec
            while len(buf) >= self.length and produced < n:
                yield buf[: self.length]
                buf = buf[self.length :]
                produced += 1
            if produced >= n:
                return

    # -- documents: records in a per-epoch shuffled order, `stitch` of them per sample
    def _document_epoch(self, epoch: int, first: int) -> Iterator[np.ndarray]:
        n = self.samples_per_epoch()
        rng = np.random.default_rng([self.seed, _ORDER_SALT, self.index, epoch])
        files = [self.files[i] for i in rng.permutation(len(self.files))]
        block = self.shuffle_buffer
        first_record = first * self.stitch
        block_no, drop = divmod(first_record, block)
        records = self._read(files, block_no * block)
        group: list[np.ndarray] = []
        sample = first
        while sample < n:
            chunk = [r for _, r in zip(range(block), records, strict=False)]
            if not chunk:
                return
            if block > 1:
                order = np.random.default_rng([self.seed, _ORDER_SALT, self.index, epoch, block_no]).permutation(
                    len(chunk)
                )
                chunk = [chunk[i] for i in order]
            block_no += 1
            for rec in chunk[drop:]:
                group.append(rec)
                if len(group) < self.stitch:
                    continue
                tokens = np.concatenate(group) if self.stitch > 1 else group[0]
                group = []
                if self.mode == "documents_fixed":
                    yield tokens[: self.length]
                else:
                    r = np.random.default_rng([self.seed, _WINDOW_SALT, self.index, epoch, sample])
                    offset = int(r.integers(0, len(tokens) - self.length + 1))
                    yield tokens[offset : offset + self.length]
                sample += 1
                if sample >= n:
                    return
            drop = 0

    def samples(self, start: int) -> Iterator[np.ndarray]:
        """Samples number start, start+1, … of the endless stream."""
        per_epoch = self.samples_per_epoch()
        epoch, first = divmod(start, per_epoch)
        while True:
            it = self._chunk_epoch(first) if self.mode == "chunks" else self._document_epoch(epoch, first)
            for sample in it:
                if len(sample) != self.length:
                    raise DataError(f"{self.card.name}: a sample came out {len(sample)} tokens long; re-encode it")
                yield sample
            epoch, first = epoch + 1, 0


def _source(
    ds: DatasetConfig,
    index: int,
    *,
    length: int,
    stitch: int,
    shuffle_buffer: int,
    seed: int,
) -> _Source:
    card = dataset_card(ds.dir)
    if ds.mode != "chunks" and card.records and stitch * card.min_record_tokens < length:
        need = -(-length // max(card.min_record_tokens, 1))
        raise ConfigError(
            f"data.stitch={stitch} × shortest record {card.min_record_tokens} tokens in {ds.dir} < n_ctx+1={length}; "
            f"set data.stitch={need} or more, or re-encode with --minimum-size {-(-length // stitch)}"
        )
    src = _Source(card, card.shard_paths(ds.dir), ds.mode, length, stitch, shuffle_buffer, seed, index)
    if src.samples_per_epoch() < 1:
        raise DataError(f"{ds.dir} holds no {ds.mode} sample of n_ctx+1={length} tokens; encode more text")
    return src


@dataclass
class TrainData:
    """The training datasets, checked and opened (each card read once) for one n_ctx and seed: what `train_batches`
    reads."""

    sources: list[_Source]
    weights: np.ndarray  # each dataset's share of the samples, summing to 1

    @property
    def card(self) -> DatasetCard:
        """The first training dataset's card."""
        return self.sources[0].card


def check_data(cfg: DataConfig, *, n_ctx: int, vocab_size: int | None = None, seed: int = 0) -> TrainData:
    """Check every precondition before training starts (datasets exist, sample lengths fit, ids fit the model) and
    return the datasets opened for `train_batches` with `seed`.

    `cfg` is validated where it is made (`neo.config` composes and validates every section), not again here.
    """
    cfg.require_train()
    datasets = cfg.train_datasets()
    sources = []
    for i, ds in enumerate(datasets):
        src = _source(ds, i, length=n_ctx + 1, stitch=cfg.stitch, shuffle_buffer=cfg.shuffle_buffer, seed=seed)
        if vocab_size is not None and src.card.vocab_size > vocab_size:
            raise ConfigError(
                f"{ds.dir} was encoded with a {src.card.vocab_size}-token vocabulary but model.n_vocab={vocab_size}; "
                f"set model.n_vocab to at least {src.card.vocab_size}"
            )
        sources.append(src)
    weights = np.array([d.weight for d in datasets], dtype=np.float64)
    return TrainData(sources, weights / weights.sum())


def _mix_choices(block: int, seed: int, weights: np.ndarray, batch_size: int) -> np.ndarray:
    rng = np.random.default_rng([seed, _MIX_SALT, block])
    return rng.choice(len(weights), size=(_MIX_BLOCK, batch_size), p=weights)


def _row_range(rows: range | None, batch_size: int) -> range:
    rows = range(batch_size) if rows is None else rows
    if rows.step != 1 or not 0 <= rows.start < rows.stop <= batch_size:
        raise ConfigError(f"rows {rows} are not a contiguous part of a batch of {batch_size} rows")
    return rows


def _keep_rows(stream: Iterator[np.ndarray], batch_size: int, rows: range) -> Iterator[np.ndarray]:
    """Read every sample of each global batch, keep `rows` of it (the others are another host's)."""
    while True:
        kept = [sample for r, sample in zip(range(batch_size), stream, strict=False) if r in rows]
        if len(kept) < len(rows):
            return
        yield np.stack(kept)


def train_batches(
    cfg: DataConfig,
    *,
    n_ctx: int,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    rows: range | None = None,
    data: TrainData | None = None,
) -> Iterator[np.ndarray]:
    """Endless int32 batches [len(rows), n_ctx + 1]: `rows` of each global batch (default all), from `start_step`.

    The global batch of a step depends on (seed, step) only, so any split of its rows over hosts reads the same data.
    `data` is what `check_data` opened for this n_ctx and seed (default: open it now).
    """
    data = check_data(cfg, n_ctx=n_ctx, seed=seed) if data is None else data
    rows = _row_range(rows, batch_size)
    sources, weights = data.sources, data.weights
    if len(sources) == 1:
        yield from _keep_rows(sources[0].samples(start_step * batch_size), batch_size, rows)
        return
    start_block, start_row = divmod(start_step, _MIX_BLOCK)
    consumed = np.zeros(len(sources), dtype=np.int64)  # samples each dataset served before start_step
    for block in range(start_block):
        consumed += np.bincount(_mix_choices(block, seed, weights, batch_size).ravel(), minlength=len(sources))
    head = _mix_choices(start_block, seed, weights, batch_size)[:start_row]
    consumed += np.bincount(head.ravel(), minlength=len(sources))
    streams = [src.samples(int(c)) for src, c in zip(sources, consumed, strict=True)]
    block = start_block
    while True:
        for choice in _mix_choices(block, seed, weights, batch_size)[start_row if block == start_block else 0 :]:
            samples = [next(streams[c]) for c in choice]  # every row, in order: each stream's position stays global
            yield np.stack(samples[rows.start : rows.stop])
        block += 1


def eval_batches(cfg: DataConfig, *, n_ctx: int, batch_size: int, rows: range | None = None) -> Iterator[np.ndarray]:
    """The eval set (data.eval_dir) as int32 batches [len(rows), n_ctx + 1]: `rows` of each full global batch.

    Finite and identical on every call: the token stream cut into n_ctx+1 slices (the trainer takes eval_steps).
    """
    if not cfg.eval_dir:
        raise ConfigError("data.eval_dir is empty; pass data.eval_dir=DIR (a held-out dataset from `neo data encode`)")
    rows = _row_range(rows, batch_size)
    card = dataset_card(cfg.eval_dir)
    src = _Source(card, card.shard_paths(cfg.eval_dir), "chunks", n_ctx + 1, 1, 1, 0, 0)
    n_batches = src.samples_per_epoch() // batch_size
    if n_batches == 0:
        raise DataError(f"{cfg.eval_dir} holds less than one eval batch of {batch_size}; encode more eval text")
    yield from itertools.islice(_keep_rows(src._chunk_epoch(0), batch_size, rows), n_batches)


# ---------------------------------------------------------------- masked-LM stage


@dataclass(frozen=True)
class MlmOptions:
    """The masking stage's options: GPT-Neo's `mlm_*` keys, which live (and are documented) in the model config."""

    mask_id: int
    mask_prob: float = 0.15
    same_token_prob: float = 0.10
    random_token_prob: float = 0.10
    cls_token_id: int = -1  # < 0: none
    mask_ignore_ids: tuple[int, ...] = ()

    @classmethod
    def from_model(cls, model: Any) -> MlmOptions:
        """Read `model.mlm_*` from a ModelConfig (duck-typed: neo.data does not import the model package)."""
        return cls(
            mask_id=model.mlm_mask_id,
            mask_prob=model.mlm_mask_prob,
            same_token_prob=model.mlm_same_token_prob,
            random_token_prob=model.mlm_random_token_prob,
            cls_token_id=model.mlm_cls_token_id,
            mask_ignore_ids=tuple(model.mlm_mask_ignore_ids),
        )


class MlmBatch(NamedTuple):
    inputs: np.ndarray  # int32 tokens with the selected positions masked / replaced / kept
    labels: np.ndarray  # int32: the original token at selected positions, IGNORE elsewhere
    mask: np.ndarray  # bool: the selected positions (the only ones the loss counts)


IGNORE = -1


def mask_tokens(tokens: np.ndarray, mlm: MlmOptions, vocab_size: int, rng: np.random.Generator) -> MlmBatch:
    """BERT-style masking with GPT-Neo's mlm_* options; labels hold the originals where masked (not inverted).

    Of the selected positions, `same_token_prob` keep their token, `random_token_prob` get a uniformly random id and
    the rest get `mask_id`. With a cls token, it is prepended (the last token drops off) and never selected.
    """
    if not 0 <= mlm.mask_id < vocab_size:
        raise ConfigError(f"model.mlm_mask_id={mlm.mask_id} must be a token id in [0, {vocab_size})")
    tokens = np.asarray(tokens, dtype=np.int32)
    has_cls = mlm.cls_token_id >= 0
    if has_cls:
        cls_col = np.full((*tokens.shape[:-1], 1), mlm.cls_token_id, np.int32)
        tokens = np.concatenate([cls_col, tokens[..., :-1]], axis=-1)
    maskable = ~np.isin(tokens, np.asarray(mlm.mask_ignore_ids, dtype=np.int32))
    if has_cls:
        maskable[..., 0] = False
    selected = (rng.random(tokens.shape) < mlm.mask_prob) & maskable
    action = rng.random(tokens.shape)
    keep = action < mlm.same_token_prob
    randomize = (action >= mlm.same_token_prob) & (action < mlm.same_token_prob + mlm.random_token_prob)
    random_ids = rng.integers(0, vocab_size, size=tokens.shape, dtype=np.int32)
    inputs = np.where(selected & randomize, random_ids, tokens)
    inputs = np.where(selected & ~keep & ~randomize, np.int32(mlm.mask_id), inputs).astype(np.int32)
    labels = np.where(selected, tokens, np.int32(IGNORE)).astype(np.int32)
    return MlmBatch(inputs, labels, selected)


def mlm_train_batches(
    cfg: DataConfig,
    *,
    mlm: MlmOptions,
    n_ctx: int,
    batch_size: int,
    seed: int,
    vocab_size: int,
    start_step: int = 0,
    rows: range | None = None,
    data: TrainData | None = None,
) -> Iterator[MlmBatch]:
    """`train_batches` followed by the masking stage; masks are keyed on (seed, step, row of the global batch), so
    resume is exact and any split of the rows over hosts masks alike."""
    rows = _row_range(rows, batch_size)
    batches = train_batches(
        cfg, n_ctx=n_ctx, batch_size=batch_size, seed=seed, start_step=start_step, rows=rows, data=data
    )
    for step, batch in enumerate(batches, start_step):
        masked = [
            mask_tokens(row[None], mlm, vocab_size, np.random.default_rng([seed, _MLM_SALT, step, r]))
            for r, row in zip(rows, batch, strict=True)
        ]
        yield MlmBatch(*(np.concatenate(parts) for parts in zip(*masked, strict=True)))
