"""End-to-end training throughput against the published Keras examples, on the same data.

Video: keras.io "Video Classification with a CNN-RNN Architecture"
(Sayak Paul, 2021), implemented as its authors wrote it:

    frames    `load_video`: every frame centre-cropped square, resized to 224×224 (cv2),
              BGR -> RGB; the first MAX_SEQ_LENGTH = 20 frames are used
    features  InceptionV3 (`include_top=False, pooling="avg"`, its `preprocess_input` in
              the model), called with `predict` on one frame at a time, as
              `prepare_all_videos` does: 2048 features per frame
    model     GRU(16, return_sequences) with the frame mask -> GRU(8) -> Dropout(0.4) ->
              Dense(8, relu) -> Dense(classes, softmax); Adam, sparse cross-entropy;
              `fit`'s default batch of 32

against the action task's `small` preset: 16 frames sampled over the clip, resized to
96 px, differenced (`frames.modality=diff`), a plain 5-layer CNN on a batch of clips in
one call (`FrameEncoder`), then `ActionClassifier` (masked GRU of 128) at batch 32.

Adapted: the example reads UCF101 videos from disk; both sides here start from the same
decoded clips in memory (32 frames of 112×112 uint8, the embedded corpus's shape), so
video decoding is not timed. InceptionV3 runs with random weights: ImageNet weights cannot
be downloaded here, and weights do not change the work. Quality is not compared: without
ImageNet weights the example's features mean nothing.

Stages, each timed on the same clips: `features` (clips/s from decoded frames to cached
features) and `train step` (clips/s of one optimizer step of the sequence model on
cached features).

Speech: keras.io "Automatic Speech Recognition using CTC" (Mohamed Reda Bouadjenek and
Ngoc Dung Huynh, 2021), the DeepSpeech2-like model as written: `encode_single_sample`
(STFT of 256 / 160 / 384, magnitude ** 0.5, normalised per utterance) in the input
pipeline; Conv2D 32 [11, 41] stride [2, 2] and Conv2D 32 [11, 21] stride [1, 2] (batch
norm, ReLU), 5 bidirectional GRU layers of `rnn_units=512` with dropout 0.5, Dense 1024 +
ReLU, softmax over the characters + blank; Adam 1e-4, CTC; batch 32. Adapted: Keras 3 has
no `keras.backend.ctc_batch_cost`, so its `CTCLoss` calls `keras.ops.ctc_loss` with the
same lengths (every label its padded length, as the example does) and the blank last.
Against the speech task's `small` preset (`SpeechRecognizer`: in-graph MFCC, conv front
end subsampling time by 3, 2 BiGRU of 160). One stage, `train step` (utterances/s, raw
16 kHz waveforms in: the example's STFT pipeline is timed with its step); `full` and
`smoke` profiles only (`Profile.reference_utterances`).

Translation: tensorflow.org "Neural machine translation with attention" (2023), as
written: `tf_lower_and_split_punct` + `TextVectorization(max_tokens=5000, ragged=True)`
per language; encoder = Embedding(units, mask_zero) + Bidirectional(GRU(units),
merge_mode="sum"); decoder = Embedding + GRU + `CrossAttention` (one-head
MultiHeadAttention, Add, LayerNormalization) + Dense(vocabulary); `masked_loss`,
Adam, batch 64, `UNITS = 256`. Against the translation `small` preset (SentencePiece
subwords, `Translator`: BiGRU encoder, attentive GRU decoder, XLA as the preset sets
it). Both train on the same 64 sentence pairs (synthetic words, so no corpus is needed;
each side tokenizes them its own way, once, outside the timed step). Adapted: `fit`
over a dataset becomes `train_on_batch` on one batch (the same step), and Keras 3 needs
neither the tutorial's `_keras_mask` deletion nor its `tf.keras` spelling. One stage, `train step`
(sentence pairs/s).

    python -m bench.reference --profile quick --threads 1 --out FILE
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench import machine
from bench.timing import Timer, interleave

CLASSES = 15
CLIP_SHAPE = (32, 112, 112, 3)
# The keras.io example's constants.
IMG_SIZE, MAX_SEQ_LENGTH, NUM_FEATURES, FIT_BATCH = 224, 20, 2048, 32


def synthetic_clips(count: int, seed: int) -> np.ndarray:
    """`[count, 32, 112, 112, 3]` uint8 noise (content does not change the work)."""
    return np.random.default_rng(seed).integers(0, 256, (count, *CLIP_SHAPE), dtype=np.uint8)


# -- the keras.io example ------------------------------------------------------------------
def crop_center_square(frame):
    y, x = frame.shape[0:2]
    min_dim = min(y, x)
    start_x = (x // 2) - (min_dim // 2)
    start_y = (y // 2) - (min_dim // 2)
    return frame[start_y : start_y + min_dim, start_x : start_x + min_dim]


def load_frames(clip, resize=(IMG_SIZE, IMG_SIZE)):
    """The example's `load_video` on frames already decoded (BGR, as cv2 decodes them)."""
    import cv2

    frames = []
    for frame in clip:
        frame = crop_center_square(frame)
        frame = cv2.resize(frame, resize)
        frame = frame[:, :, [2, 1, 0]]
        frames.append(frame)
    return np.array(frames)


def build_feature_extractor():
    import keras

    feature_extractor = keras.applications.InceptionV3(
        weights=None,  # the example: "imagenet" (not downloadable here; same work)
        include_top=False,
        pooling="avg",
        input_shape=(IMG_SIZE, IMG_SIZE, 3),
    )
    preprocess_input = keras.applications.inception_v3.preprocess_input
    inputs = keras.Input((IMG_SIZE, IMG_SIZE, 3))
    preprocessed = preprocess_input(inputs)
    outputs = feature_extractor(preprocessed)
    return keras.Model(inputs, outputs, name="feature_extractor")


def reference_features(feature_extractor, clip):
    """`prepare_all_videos` for one video: (features [1, 20, 2048], mask [1, 20])."""
    frames = load_frames(clip)[None, ...]
    frame_mask = np.zeros(shape=(1, MAX_SEQ_LENGTH), dtype="bool")
    frame_features = np.zeros(shape=(1, MAX_SEQ_LENGTH, NUM_FEATURES), dtype="float32")
    for i, batch in enumerate(frames):
        video_length = batch.shape[0]
        length = min(MAX_SEQ_LENGTH, video_length)
        for j in range(length):
            frame_features[i, j, :] = feature_extractor.predict(batch[None, j, :], verbose=0)
        frame_mask[i, :length] = 1
    return frame_features, frame_mask


def get_sequence_model(classes=CLASSES):
    import keras

    frame_features_input = keras.Input((MAX_SEQ_LENGTH, NUM_FEATURES))
    mask_input = keras.Input((MAX_SEQ_LENGTH,), dtype="bool")
    x = keras.layers.GRU(16, return_sequences=True)(frame_features_input, mask=mask_input)
    x = keras.layers.GRU(8)(x)
    x = keras.layers.Dropout(0.4)(x)
    x = keras.layers.Dense(8, activation="relu")(x)
    output = keras.layers.Dense(classes, activation="softmax")(x)
    rnn_model = keras.Model([frame_features_input, mask_input], output)
    rnn_model.compile(
        loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"]
    )
    return rnn_model


# -- rnnsuite's tasks ---------------------------------------------------------------------------
def small_config(task):
    from shared import config as config_lib

    return config_lib.resolve(task.config_class, task.presets, "small")


def compiled_model(task, config, run_dir):
    """The task's model, built from `run_dir` and compiled as the training loop compiles it."""
    from shared.training import make_optimizer

    model = task.build_model(config, run_dir)
    model.compile(
        optimizer=make_optimizer(config.train, total_steps=1000),
        jit_compile=config.train.jit_compile,
        **task.compile_args(config),
    )
    return model


def rnnsuite_video(run_dir):
    """(features of a clip batch, the compiled `small` action model, its frames spec)."""
    import tensorflow as tf

    from suite.video.features import build_frame_encoder
    from suite.video.pipeline import prepare_batch, save_labels
    from suite.video.task import ActionTask, frames_spec, save_frame_encoder

    task = ActionTask()
    save_labels(run_dir, [f"action_{number}" for number in range(CLASSES)])
    config = small_config(task)
    spec = frames_spec(config)
    encoder = build_frame_encoder(config.frames.cnn, spec.size)
    save_frame_encoder(run_dir, encoder, weights="random (not trained)")
    model = compiled_model(task, config, run_dir)

    @tf.function(reduce_retracing=True)
    def features(clips):
        length = tf.fill(tf.shape(clips)[:1], tf.shape(clips)[1])
        picked, valid = prepare_batch(clips, length, spec)
        return encoder(picked, training=False), valid

    return lambda clips: [t.numpy() for t in features(tf.constant(clips))], model, spec


# -- the keras.io CTC speech example --------------------------------------------------------
frame_length, frame_step, fft_length = 256, 160, 384


def encode_single_sample(audio):
    """The example's features of one waveform (its file reading left out)."""
    import tensorflow as tf

    spectrogram = tf.signal.stft(
        audio, frame_length=frame_length, frame_step=frame_step, fft_length=fft_length
    )
    spectrogram = tf.abs(spectrogram)
    spectrogram = tf.math.pow(spectrogram, 0.5)
    means = tf.math.reduce_mean(spectrogram, 1, keepdims=True)
    stddevs = tf.math.reduce_std(spectrogram, 1, keepdims=True)
    spectrogram = (spectrogram - means) / (stddevs + 1e-10)
    return spectrogram


def CTCLoss(y_true, y_pred):  # noqa: N802 (the example's name)
    from keras import ops

    batch_len = ops.shape(y_true)[0]
    input_length = ops.shape(y_pred)[1] * ops.ones((batch_len,), dtype="int32")
    label_length = ops.shape(y_true)[1] * ops.ones((batch_len,), dtype="int32")
    blank = ops.shape(y_pred)[2] - 1
    log_probs = ops.log(y_pred + 1e-7)  # ctc_batch_cost took probabilities
    loss = ops.ctc_loss(ops.cast(y_true, "int32"), log_probs, label_length, input_length, blank)
    return ops.expand_dims(loss, 1)


def build_asr_model(input_dim, output_dim, rnn_layers=5, rnn_units=128):
    import keras
    from keras import layers

    input_spectrogram = layers.Input((None, input_dim), name="input")
    x = layers.Reshape((-1, input_dim, 1), name="expand_dim")(input_spectrogram)
    x = layers.Conv2D(32, [11, 41], strides=[2, 2], padding="same", use_bias=False, name="conv_1")(
        x
    )
    x = layers.BatchNormalization(name="conv_1_bn")(x)
    x = layers.ReLU(name="conv_1_relu")(x)
    x = layers.Conv2D(32, [11, 21], strides=[1, 2], padding="same", use_bias=False, name="conv_2")(
        x
    )
    x = layers.BatchNormalization(name="conv_2_bn")(x)
    x = layers.ReLU(name="conv_2_relu")(x)
    x = layers.Reshape((-1, x.shape[-2] * x.shape[-1]))(x)
    for i in range(1, rnn_layers + 1):
        recurrent = layers.GRU(
            units=rnn_units,
            activation="tanh",
            recurrent_activation="sigmoid",
            use_bias=True,
            return_sequences=True,
            reset_after=True,
            name=f"gru_{i}",
        )
        x = layers.Bidirectional(recurrent, name=f"bidirectional_{i}", merge_mode="concat")(x)
        if i < rnn_layers:
            x = layers.Dropout(rate=0.5)(x)
    x = layers.Dense(units=rnn_units * 2, name="dense_1")(x)
    x = layers.ReLU(name="dense_1_relu")(x)
    x = layers.Dropout(rate=0.5)(x)
    output = layers.Dense(units=output_dim + 1, activation="softmax")(x)
    model = keras.Model(input_spectrogram, output, name="DeepSpeech_2")
    opt = keras.optimizers.Adam(learning_rate=1e-4)
    model.compile(optimizer=opt, loss=CTCLoss)
    return model


def speech_contenders(profile, run_dir):
    """Each side's training step on the same waveforms and labels."""
    import tensorflow as tf

    from bench.features import synthetic_utterances
    from suite.speech.task import SpeechTask, speech_vocabulary

    batch = profile.reference_utterances
    waves = synthetic_utterances(batch, profile.reference_seconds, profile.seed)
    vocab = speech_vocabulary()
    rng = np.random.default_rng(profile.seed)
    labels = rng.integers(1, vocab.size, (batch, max(2, int(12 * profile.reference_seconds))))

    reference = build_asr_model(fft_length // 2 + 1, vocab.size, rnn_units=512)
    features = tf.function(lambda audio: tf.map_fn(encode_single_sample, audio))

    task = SpeechTask()
    config = small_config(task)
    m = config.model
    ours = compiled_model(task, config, run_dir)
    inputs = {"waveform": waves, "length": np.full(batch, waves.shape[1], np.int32)}
    setups = {
        "keras.io CTC ASR": "STFT 193 bins, 2 conv + 5×BiGRU 512",
        "rnnsuite": f"MFCC 39, conv ÷{m.time_stride} + {m.num_layers}×BiGRU {m.units}",
    }
    contenders = [
        (
            "keras.io CTC ASR",
            "train step",
            batch,
            lambda: reference.train_on_batch(features(waves), labels),
        ),
        ("rnnsuite", "train step", batch, lambda: ours.train_on_batch(inputs, labels)),
    ]
    return contenders, setups


# -- the tensorflow.org NMT tutorial ---------------------------------------------------------
UNITS, MAX_VOCAB_SIZE, NMT_BATCH = 256, 5000, 64


def tf_lower_and_split_punct(text):
    import tensorflow as tf
    import tensorflow_text as tf_text

    # Split accented characters.
    text = tf_text.normalize_utf8(text, "NFKD")
    text = tf.strings.lower(text)
    # Keep space, a to z, and select punctuation.
    text = tf.strings.regex_replace(text, "[^ a-z.?!,¿]", "")
    # Add spaces around punctuation.
    text = tf.strings.regex_replace(text, "[.?!,¿]", r" \0 ")
    # Strip whitespace.
    text = tf.strings.strip(text)
    text = tf.strings.join(["[START]", text, "[END]"], separator=" ")
    return text


def build_nmt_tutorial(context_text_processor, target_text_processor, units=UNITS):
    import keras
    import tensorflow as tf

    class Encoder(keras.layers.Layer):
        def __init__(self, text_processor, units):
            super().__init__()
            self.text_processor = text_processor
            self.vocab_size = text_processor.vocabulary_size()
            self.units = units
            self.embedding = keras.layers.Embedding(self.vocab_size, units, mask_zero=True)
            self.rnn = keras.layers.Bidirectional(
                merge_mode="sum",
                layer=keras.layers.GRU(
                    units, return_sequences=True, recurrent_initializer="glorot_uniform"
                ),
            )

        def call(self, x):
            x = self.embedding(x)
            x = self.rnn(x)
            return x

    class CrossAttention(keras.layers.Layer):
        def __init__(self, units, **kwargs):
            super().__init__()
            self.mha = keras.layers.MultiHeadAttention(key_dim=units, num_heads=1, **kwargs)
            self.layernorm = keras.layers.LayerNormalization()
            self.add = keras.layers.Add()

        def call(self, x, context):
            attn_output, attn_scores = self.mha(
                query=x, value=context, return_attention_scores=True
            )
            attn_scores = tf.reduce_mean(attn_scores, axis=1)
            self.last_attention_weights = attn_scores
            x = self.add([x, attn_output])
            x = self.layernorm(x)
            return x

    class Decoder(keras.layers.Layer):
        def __init__(self, text_processor, units):
            super().__init__()
            self.text_processor = text_processor
            self.vocab_size = text_processor.vocabulary_size()
            self.units = units
            self.embedding = keras.layers.Embedding(self.vocab_size, units, mask_zero=True)
            self.rnn = keras.layers.GRU(
                units,
                return_sequences=True,
                return_state=True,
                recurrent_initializer="glorot_uniform",
            )
            self.attention = CrossAttention(units)
            self.output_layer = keras.layers.Dense(self.vocab_size)

        def call(self, context, x, state=None, return_state=False):
            x = self.embedding(x)
            x, state = self.rnn(x, initial_state=state)
            x = self.attention(x, context)
            self.last_attention_weights = self.attention.last_attention_weights
            logits = self.output_layer(x)
            if return_state:
                return logits, state
            return logits

    class Translator(keras.Model):
        def __init__(self, units, context_text_processor, target_text_processor):
            super().__init__()
            self.encoder = Encoder(context_text_processor, units)
            self.decoder = Decoder(target_text_processor, units)

        def call(self, inputs):
            context, x = inputs
            context = self.encoder(context)
            logits = self.decoder(context, x)
            return logits

    def masked_loss(y_true, y_pred):
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
        loss = loss_fn(y_true, y_pred)
        mask = tf.cast(y_true != 0, loss.dtype)
        loss *= mask
        return tf.reduce_sum(loss) / tf.reduce_sum(mask)

    def masked_acc(y_true, y_pred):
        y_pred = tf.argmax(y_pred, axis=-1)
        y_pred = tf.cast(y_pred, y_true.dtype)
        match = tf.cast(y_true == y_pred, tf.float32)
        mask = tf.cast(y_true != 0, tf.float32)
        return tf.reduce_sum(match) / tf.reduce_sum(mask)

    model = Translator(units, context_text_processor, target_text_processor)
    model.compile(optimizer="adam", loss=masked_loss, metrics=[masked_acc, masked_loss])
    return model


def synthetic_pairs(count, seed):
    """`count` (English-like, Spanish-like) sentence pairs of 12–30 pseudo-words."""
    rng = np.random.default_rng(seed)
    syllables = "la le lo ma me mo sa se so ta te to na ne no ra re ro da de do".split()

    def vocabulary(size):
        return ["".join(rng.choice(syllables, rng.integers(1, 4))) for _ in range(size)]

    source_words, target_words = vocabulary(3000), vocabulary(3000)
    pairs = []
    for _ in range(count):
        length = int(rng.integers(12, 31))
        source = " ".join(rng.choice(source_words, length)) + "."
        target = " ".join(rng.choice(target_words, length + int(rng.integers(0, 4)))) + "."
        pairs.append((source, target))
    return pairs


def translation_contenders(profile, run_dir):
    """Each side's training step on the same sentence pairs, tokenized its own way."""
    import keras
    import tensorflow as tf

    from suite.nlp.corpus import Pair
    from suite.nlp.pipeline import encode_pairs
    from suite.nlp.task import TranslationTask
    from suite.nlp.tokenizer import load_or_build_tokenizers

    pairs = synthetic_pairs(2000, profile.seed)
    batch = pairs[:NMT_BATCH]

    processors = []
    for side in (0, 1):
        processor = keras.layers.TextVectorization(
            standardize=tf_lower_and_split_punct, max_tokens=MAX_VOCAB_SIZE, ragged=True
        )
        processor.adapt(tf.constant([pair[side] for pair in pairs]))
        processors.append(processor)
    context = processors[0](tf.constant([p[0] for p in batch])).to_tensor()
    target = processors[1](tf.constant([p[1] for p in batch]))
    targ_in, targ_out = target[:, :-1].to_tensor(), target[:, 1:].to_tensor()
    tutorial = build_nmt_tutorial(*processors)

    task = TranslationTask()
    config = small_config(task)
    m, d = config.model, config.data
    objects = [Pair(source, target) for source, target in pairs]
    source_vocab, target_vocab = load_or_build_tokenizers(
        run_dir, objects, config.tokenizer, d.max_vocab, d.lowercase
    )
    sources, targets, _ = encode_pairs(objects[:NMT_BATCH], source_vocab, target_vocab)

    def padded(rows):
        out = np.zeros((len(rows), max(len(r) for r in rows)), np.int32)
        for index, row in enumerate(rows):
            out[index, : len(row)] = row
        return out

    source_ids, target_ids = padded(sources), padded(targets)
    ours = compiled_model(task, config, run_dir)
    setups = {
        "tensorflow.org NMT": f"words, BiGRU {UNITS} + GRU {UNITS}, 1-head attention",
        "rnnsuite": f"subwords, BiGRU {m.units} + GRU {m.units}, {m.attention}"
        + (", XLA" if config.train.jit_compile else ""),
    }
    contenders = [
        (
            "tensorflow.org NMT",
            "train step",
            NMT_BATCH,
            lambda: tutorial.train_on_batch((context, targ_in), targ_out),
        ),
        (
            "rnnsuite",
            "train step",
            NMT_BATCH,
            lambda: ours.train_on_batch((source_ids, target_ids[:, :-1]), target_ids[:, 1:]),
        ),
    ]
    return contenders, setups


def video_contenders(profile, run_dir):
    """Each side's feature extraction on the same clips, and its sequence model's step."""
    rng = np.random.default_rng(profile.seed)
    clips = synthetic_clips(profile.reference_clips, profile.seed)
    labels = rng.integers(0, CLASSES, FIT_BATCH)

    extractor = build_feature_extractor()
    sequence_model = get_sequence_model()
    ref_features = np.zeros((FIT_BATCH, MAX_SEQ_LENGTH, NUM_FEATURES), "float32")
    ref_mask = np.ones((FIT_BATCH, MAX_SEQ_LENGTH), "bool")

    our_features_fn, our_model, spec = rnnsuite_video(run_dir)
    features, valid = our_features_fn(clips)
    our_features = np.resize(features, (FIT_BATCH, *features.shape[1:]))
    our_valid = np.resize(valid, FIT_BATCH)

    reference, ours, count = "keras.io CNN-RNN", "rnnsuite", len(clips)
    contenders = [
        (reference, "features", count, lambda: [reference_features(extractor, c) for c in clips]),
        (ours, "features", count, lambda: our_features_fn(clips)),
        (
            reference,
            "train step",
            FIT_BATCH,
            lambda: sequence_model.train_on_batch([ref_features, ref_mask], labels),
        ),
        (
            ours,
            "train step",
            FIT_BATCH,
            lambda: our_model.train_on_batch((our_features, our_valid), labels),
        ),
    ]
    setups = {
        reference: f"{MAX_SEQ_LENGTH} frames × {IMG_SIZE} px, InceptionV3, GRU 16→8",
        ours: f"{spec.num_frames} frames × {spec.size} px {spec.modality}, convnet, GRU 128",
    }
    return contenders, setups


# domain -> (its contenders, the unit they count)
DOMAINS = {
    "video": (video_contenders, "clips"),
    "translation": (translation_contenders, "pairs"),
    "speech": (speech_contenders, "utterances"),
}


def run(profile, threads, log) -> list[dict]:
    domains = [d for d in DOMAINS if d != "speech" or profile.reference_utterances]
    rows = []
    # The tasks build their models from run dirs (labels, vocabularies, frame CNN).
    with tempfile.TemporaryDirectory(prefix="rnnsuite-reference-") as scratch:
        for domain in domains:
            contenders_of, unit = DOMAINS[domain]
            run_dir = Path(scratch) / domain
            run_dir.mkdir()
            contenders, setups = contenders_of(profile, run_dir)
            timers = [Timer(f"{name}|{stage}", step) for name, stage, _, step in contenders]
            for timer in timers:
                timer.warm_up(profile.warmup, profile.min_time)
            interleave(timers, profile.repeats)
            for timer, (name, stage, items, _) in zip(timers, contenders, strict=True):
                summary = timer.summary()
                rows.append(
                    {
                        "domain": domain,
                        "implementation": name,
                        "stage": stage,
                        "setup": setups[name],
                        "threads": threads,
                        "items": items,
                        "unit": unit,
                        "items_per_s": items / summary["median_s"],
                        "timing": summary,
                    }
                )
                log(rows[-1])
    return rows


def main(argv=None) -> int:
    return machine.section_main(__doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
