"""Speech recognition: a multi-voice spoken corpus, audio input, and text normalisation."""
