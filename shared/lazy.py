"""Lazy package exports: names that load their module on first use."""

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """A module `__getattr__` that imports `exports[name]` (a module path) on first use.

    Domain packages use it so that `from suite.speech import SpeechRecognizer` works while
    importing the package (e.g. in corpus worker processes) does not load TensorFlow.
    """

    def __getattr__(name):
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
