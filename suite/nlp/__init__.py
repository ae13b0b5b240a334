"""Machine translation: attentive recurrent encoder–decoder, text in, text out.

`from suite.nlp import Translator, TranslationTask` works; the heavy modules load on first
use, so reading the corpus does not import TensorFlow.
"""

_EXPORTS = {
    "Translator": "suite.nlp.translation",
    "TranslationTask": "suite.nlp.task",
    "TranslationConfig": "suite.nlp.task",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'suite.nlp' has no attribute {name!r}")
