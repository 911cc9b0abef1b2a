"""Integrations with training stacks: the applications layer that puts this
library's losses inside other libraries' models.

* ``crossentropy.integrations.transformers``: Hugging Face transformers
  causal language models train on :func:`crossentropy.linear_cross_entropy`
  (``apply``, ``unapply``) or on the fused :func:`crossentropy.cross_entropy`
  (``use_fused_loss``).

Importing this package imports nothing else; each integration imports its
library (and torch) only when it is called.
"""

__all__: list = []
