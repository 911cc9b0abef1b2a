"""The torch kernels: passes over memory that call the math of ``crossentropy.losses``.

Importing this package makes the autograd Function classes of
``crossentropy._autograd``, so that they exist before ``torch.compile``
traces a call (a class statement cannot be traced)."""

from .._autograd import function_classes

function_classes()
