"""Video: action recognition and captioning on rendered motion-capture clips or user videos."""
