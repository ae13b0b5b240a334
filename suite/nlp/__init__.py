"""Machine translation: attentive recurrent encoder–decoder, text in, text out.

`from suite.nlp import Translator, TranslationTask` works; the heavy modules load on first
use, so reading the corpus does not import TensorFlow.
"""

from shared.lazy import lazy_exports

_EXPORTS = {
    "Translator": "suite.nlp.translation",
    "TranslationTask": "suite.nlp.task",
    "TranslationConfig": "suite.nlp.task",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
