"""Video: action recognition and captioning on rendered motion-capture clips or user videos.

`ActionClassifier` and `ActionTask` are imported on first use, so that importing the
package (or its data modules) does not load TensorFlow.
"""

__all__ = ["ActionClassifier", "ActionConfig", "ActionTask"]


def __getattr__(name):
    if name == "ActionClassifier":
        from suite.video.action import ActionClassifier

        return ActionClassifier
    if name in ("ActionConfig", "ActionTask"):
        from suite.video import task

        return getattr(task, name)
    raise AttributeError(f"module 'suite.video' has no attribute {name!r}")
