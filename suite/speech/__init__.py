"""Speech recognition: a multi-voice spoken corpus, audio input, features and a CTC recognizer.

`from suite.speech import SpeechRecognizer, SpeechTask, LexiconSearch` works; the heavy
modules load on first use, so corpus worker processes do not import TensorFlow.
"""

from shared.lazy import lazy_exports

_EXPORTS = {
    "SpeechRecognizer": "suite.speech.model",
    "SpeechFeatures": "suite.speech.features",
    "LexiconSearch": "suite.speech.lm",
    "SpeechTask": "suite.speech.task",
    "SpeechConfig": "suite.speech.task",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
