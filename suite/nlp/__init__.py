"""Machine translation: attentive recurrent encoder–decoder, text in, text out."""

from suite.nlp.task import TranslationConfig, TranslationTask
from suite.nlp.translation import Translator

__all__ = ["TranslationConfig", "TranslationTask", "Translator"]
