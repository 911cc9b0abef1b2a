"""Maximum-likelihood linear classifiers fitted with any loss of the family,
their calibration metric and their saved-model format.

=============================  ================================================
:mod:`.softmax_regression`     :class:`SoftmaxRegression` (L-BFGS-B fit on the
                               losses' analytic gradients) and :data:`LOSSES`
:mod:`.calibration`            :func:`expected_calibration_error`
:mod:`.saved`                  :func:`save_model`, :func:`load_model`,
                               :class:`SavedModel`: ``.npz`` + ``.json``
=============================  ================================================

This package needs the ``cli`` extra (scikit-learn, SciPy); ``import
crossentropy`` does not import it.
"""

from .calibration import expected_calibration_error
from .saved import MODEL_FORMAT, MODEL_FORMAT_VERSION, SavedModel, load_model, save_model
from .softmax_regression import LOSSES, SoftmaxRegression

__all__ = [
    "SoftmaxRegression",
    "LOSSES",
    "expected_calibration_error",
    "SavedModel",
    "save_model",
    "load_model",
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
]
