"""Video: action recognition and captioning on rendered motion-capture clips or user videos.

The models and tasks are imported on first use, so that importing the
package (or its data modules) does not load TensorFlow.
"""

from shared.lazy import lazy_exports

_EXPORTS = {
    "ActionClassifier": "suite.video.action",
    "ActionConfig": "suite.video.task",
    "ActionTask": "suite.video.task",
    "CaptionConfig": "suite.video.caption_task",
    "CaptionTask": "suite.video.caption_task",
    "VideoCaptioner": "suite.video.captioning",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
