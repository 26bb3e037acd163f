"""OpenAI embeddings (`EMBEDDER=openai`): text-embedding-3-small through the official SDK.

Chosen by setting when an OpenAI key is configured; the bundled static model stays the
default because it needs no network. `embed` is a blocking call (the sync client): the
indexer and the search route run it in their embedding thread, never on the event loop.
Vectors are L2-normalised here so every backend can treat cosine as a dot product.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import openai

MODEL = "text-embedding-3-small"
DIM = 1536
MAX_CHARS = 8000  # the model takes 8191 tokens; characters are a safe, cheap bound
TIMEOUT = 15.0


class OpenAIEmbedder:
    def __init__(self, api_key: str, base_url: str = "", model: str = MODEL, dim: int = DIM):
        self._client = openai.OpenAI(
            api_key=api_key, base_url=base_url or None, timeout=TIMEOUT, max_retries=2
        )
        self._model = model
        self.name = f"openai-{model}-{dim}"
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # The API rejects empty strings: those rows stay zero (they match nothing).
        wanted = [(i, t[:MAX_CHARS]) for i, t in enumerate(texts) if t.strip()]
        if not wanted:
            return out
        kwargs = {"dimensions": self.dim} if self.dim != DIM else {}
        response = self._client.embeddings.create(
            model=self._model,
            input=[t for _, t in wanted],
            encoding_format="float",
            **kwargs,
        )
        for item in response.data:
            row = wanted[item.index][0]
            out[row] = np.asarray(item.embedding, dtype=np.float32)[: self.dim]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out
