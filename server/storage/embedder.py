"""Sentence embeddings for search by meaning, computed off the event loop.

The embedded default is a static model (model2vec distillation of all-MiniLM-L6-v2, see
server/embeddings/distill_minilm.py): a sentence is the normalised mean of its tokens'
rows in a 29 525 x 128 table, so it needs no torch, runs offline and embeds thousands of
sentences a second on one core. Callers run `embed` in an executor: it is CPU work.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "embeddings" / "minilm-static"
MAX_CHARS = 4096  # longer text adds nothing a 512-token mean would keep


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, rows L2-normalised (zero rows for empty text)."""
        ...


class StaticEmbedder:
    """Token-table lookup + mean pooling; thread-safe (the tokenizer is guarded)."""

    def __init__(self, model_dir: str | Path = DEFAULT_MODEL_DIR) -> None:
        from tokenizers import Tokenizer

        folder = Path(model_dir)
        config = json.loads((folder / "config.json").read_text())
        self.name: str = config["name"]
        self._table = np.load(folder / "embeddings.npy").astype(np.float32)
        self.dim: int = int(self._table.shape[1])
        self._max_tokens = int(config.get("max_tokens", 512))
        self._normalize = bool(config.get("normalize", True))
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tokenizer = tokenizer
        unk = tokenizer.token_to_id("[UNK]")
        self._unk = -1 if unk is None else unk
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        with self._lock:
            encodings = self._tokenizer.encode_batch(
                [t[:MAX_CHARS] for t in texts], add_special_tokens=False
            )
        for row, enc in enumerate(encodings):
            ids = [i for i in enc.ids[: self._max_tokens] if i != self._unk]
            if ids:
                out[row] = self._table[ids].mean(axis=0)
        if self._normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            np.divide(out, norms, out=out, where=norms > 0)
        return out


_default: StaticEmbedder | None = None
_default_lock = threading.Lock()


def default_embedder() -> StaticEmbedder:
    """The bundled static model, loaded once per process (about 8 MB)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = StaticEmbedder()
        return _default
