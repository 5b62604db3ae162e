"""matta_rec: MatTA (Matryoshka Teaching Assistant) training for ranking models.

The package is organised along the data path:

- ``matta_rec.data``: feature schema, validated log-stream reader, synthetic logs.
- ``matta_rec.features``: preprocessing statistics and the Keras preprocessing layer.
- ``matta_rec.layers``: M-nested layers (Dense, GAU, cross, embeddings).
- ``matta_rec.models``: the nested relevance model and Mix'n'Match extraction.
- ``matta_rec.training``: the MatTA loss, ``train_step`` and the online training loop.
- ``matta_rec.optimizers``: the Shampoo optimizer.
- ``matta_rec.export``: TF Serving SavedModel export.
- ``matta_rec.evaluation``: AUROC / AucLoss against a baseline, reports, ablations.
- ``matta_rec.cli``: the ``matta-rec`` command.

``matta_rec.nestify(model)`` M-nests your own Keras ranking model into a
Teaching Assistant (see :func:`matta_rec.models.nestify.nestify`).
"""

import os as _os

# Keras 3 must run on TensorFlow: exports are TF SavedModels and the input
# pipeline is tf.data.  Respect an explicit choice, refuse a conflicting one
# loudly when Keras is imported (see matta_rec.utils.backend).
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``matta_rec.nestify`` imports Keras on first use only.
    if name == "nestify":
        from matta_rec.models.nestify import nestify

        globals()["nestify"] = nestify
        return nestify
    raise AttributeError(f"module 'matta_rec' has no attribute {name!r}")
