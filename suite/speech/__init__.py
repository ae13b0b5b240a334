"""Speech recognition: a multi-voice spoken corpus, audio input, features and a CTC recognizer.

`from suite.speech import SpeechRecognizer, SpeechTask` works; the heavy modules load on
first use, so corpus worker processes do not import TensorFlow.
"""

_EXPORTS = {
    "SpeechRecognizer": "suite.speech.model",
    "SpeechFeatures": "suite.speech.features",
    "SpeechTask": "suite.speech.task",
    "SpeechConfig": "suite.speech.task",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'suite.speech' has no attribute {name!r}")
