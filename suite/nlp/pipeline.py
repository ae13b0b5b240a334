"""tf.data pipelines for translation: token ids bucketed by length."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

BUCKETS = (8, 12, 16, 24, 32, 48, 64, 96, 128)


def encode_pairs(pairs, source_vocab, target_vocab, max_length=None, chunk=4096):
    """Token ids of every pair: source, and target with BOS and EOS.

    Pairs with more than `max_length` tokens on either side are dropped (training only).
    Returns `(sources, targets, kept_pairs)` as lists of int32 arrays.
    """
    sources, targets, kept = [], [], []
    for start in range(0, len(pairs), chunk):
        block = pairs[start : start + chunk]
        source_ids = source_vocab.encode(tf.constant([p.source for p in block]))
        target_ids = target_vocab.encode(
            tf.constant([p.target for p in block]), add_bos=True, add_eos=True
        )
        for pair, source, target in zip(block, source_ids.numpy(), target_ids.numpy(), strict=True):
            if max_length and (len(source) > max_length or len(target) > max_length + 2):
                continue
            sources.append(np.asarray(source, np.int32))
            targets.append(np.asarray(target, np.int32))
            kept.append(pair)
    return sources, targets, kept


def _ragged(rows):
    lengths = [len(row) for row in rows]
    values = np.concatenate(rows) if rows else np.zeros([0], np.int32)
    return tf.RaggedTensor.from_row_lengths(values, lengths)


def make_dataset(sources, targets, batch_size, shuffle=False, seed=0):
    """Batches of `((source_ids, target_in), target_out)`, padded with 0, bucketed by length."""
    dataset = tf.data.Dataset.from_tensor_slices((_ragged(sources), _ragged(targets)))
    if shuffle:
        dataset = dataset.shuffle(len(sources), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(lambda source, target: ((source, target[:-1]), target[1:]))

    def length(inputs, target_out):
        return tf.maximum(tf.shape(inputs[0])[0], tf.shape(target_out)[0])

    dataset = dataset.bucket_by_sequence_length(
        length,
        bucket_boundaries=list(BUCKETS),
        bucket_batch_sizes=[batch_size] * (len(BUCKETS) + 1),
    )
    return dataset.prefetch(tf.data.AUTOTUNE)
