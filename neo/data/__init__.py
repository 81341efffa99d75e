"""neo.data: everything between raw text and a training batch, host-side only (no JAX).

- `corpus`: stream documents from .txt and lm_dataformat archives; bad files are skipped and counted.
- `tokenizer`: train byte-level BPE (`train_tokenizer`), load a tokenizer.json / directory / "gpt2" (`load_tokenizer`).
- `encode`: `encode_dataset` writes TFRecord shards (`tfrecord`) and the dataset card (`card`, DIR/dataset.yaml).
- `peek`: `peek_dataset` reads a dataset back and checks it against its card and a vocabulary size.
- `pipeline`: `train_batches` / `eval_batches` / `mlm_train_batches` for the trainer, deterministic and resumable.
"""
