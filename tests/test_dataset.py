"""tf.data pipeline: paired augmentation keeps image and mask aligned; evaluation is full size."""
import numpy as np
import tensorflow as tf

from segmodel import dataset, preprocess
from tests.helpers import training_crop


def blocky_pair(seed, h=96, w=120, block=12):
    """An image of flat color blocks and a mask *derived from its pixels* (class = red // 64)."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, (h // block + 1, w // block + 1, 3)).astype(np.uint8)
    image = grid.repeat(block, 0).repeat(block, 1)[:h, :w]
    mask = (image[..., :1] // 64).astype(np.uint8)
    return image, mask


def test_crop_flip_and_pad_keep_the_mask_derived_from_the_image():
    tf.random.set_seed(0)
    image, mask = blocky_pair(0)
    for _ in range(20):
        out_image, out_mask = training_crop(tf.constant(image), tf.constant(mask), (128, 112),
                                                 min_scale=1.0, max_scale=1.0, jitter=0.0)
        out_image, out_mask = out_image.numpy(), out_mask.numpy()[..., 0]
        assert out_image.shape == (128, 112, 3) and out_mask.dtype == np.uint8
        padded = out_mask == 255
        assert padded.sum() >= (128 - 96) * 112  # the crop is taller than the image: padded with 255
        derived = (out_image[..., 0] // 64).astype(np.uint8)
        assert np.array_equal(out_mask[~padded], derived[~padded])
        assert np.all(out_image[padded] == 0)


def test_scaling_resizes_masks_with_nearest_neighbour_and_stays_aligned():
    tf.random.set_seed(1)
    image, mask = blocky_pair(1)
    for _ in range(10):
        out_image, out_mask = training_crop(tf.constant(image), tf.constant(mask), (64, 64), 0.5, 2.0, 0.0)
        out_mask = out_mask.numpy()[..., 0]
        valid = out_mask != 255
        assert set(np.unique(out_mask[valid])) <= set(np.unique(mask))  # no invented labels
        agreement = np.mean(out_mask[valid] == (out_image.numpy()[..., 0][valid] // 64))
        assert agreement > 0.9  # only pixels on block edges can differ (bilinear image vs nearest mask)


def test_training_batches_and_full_size_evaluation(demo_dataset):
    batch = next(iter(dataset.training_dataset(str(demo_dataset / "train-*.tfrecord"), 4, (64, 80))))
    assert batch[0].shape == (4, 64, 80, 3) and batch[1].shape == (4, 64, 80, 1)
    images = list(dataset.evaluation_dataset(str(demo_dataset / "val-*.tfrecord")))
    assert len(images) == dataset.count_examples(str(demo_dataset / "val-*.tfrecord"))
    assert all(image.shape == (1, 192, 256, 3) and mask.shape == (1, 192, 256, 1) for image, mask in images)
    assert images[0][0].dtype == tf.uint8


def test_nearest_mask_sampling_equals_tensorflow_nearest():
    mask = tf.constant(np.random.default_rng(3).integers(0, 255, (37, 53, 1)).astype(np.uint8))
    for size in [(37, 53), (74, 106), (19, 27), (100, 41)]:
        rows = preprocess._nearest_sources(37, size[0], 0, size[0])
        cols = preprocess._nearest_sources(53, size[1], 0, size[1])
        ours = preprocess._gather_pixels(mask, rows, cols).numpy()
        theirs = tf.cast(tf.image.resize(mask, size, method="nearest"), tf.uint8).numpy()
        assert np.array_equal(ours, theirs), size


def test_windowed_decode_equals_decoding_the_whole_record_and_slicing(demo_dataset):
    """Training decodes only the JPEG window its crop needs; that window is the same pixels (to
    libjpeg's chroma upsampling at the window's edge) and the mask is exactly the same."""
    from segmodel.features import IMAGE_ENCODED, decode_record, decode_record_window, feature_spec
    record = next(iter(tf.data.TFRecordDataset(dataset.list_shards(str(demo_dataset / "train-*.tfrecord")))))
    _, mask = decode_record(record)
    # the same IDCT as the windowed decode
    image = tf.io.decode_jpeg(tf.io.parse_single_example(record, feature_spec())[IMAGE_ENCODED], channels=3,
                              dct_method="INTEGER_FAST")
    for start, stop in [((0, 0), (192, 256)), ((17, 33), (150, 201)), ((100, 5), (101, 6))]:
        window = {"start": tf.constant(start), "stop": tf.constant(stop)}
        part, part_mask, _ = decode_record_window(record, lambda size: window)
        expected = image[start[0]:stop[0], start[1]:stop[1]].numpy().astype(int)
        assert part.shape == expected.shape
        assert np.abs(part.numpy().astype(int) - expected).max() <= 8
        if expected.size > 100:  # a 1-pixel window is all edge
            assert np.mean(part.numpy() == expected) > 0.9
        assert np.array_equal(part_mask.numpy(), mask[start[0]:stop[0], start[1]:stop[1]].numpy())


def test_a_seed_fixes_an_examples_augmentation():
    image, mask = blocky_pair(2)
    image, mask = tf.constant(image), tf.constant(mask)

    def crop(seed):
        out = training_crop(image, mask, (48, 40), 0.5, 2.0, 1.0, seed=tf.constant(seed, tf.int64))
        return [part.numpy() for part in out]

    first, again, other = crop([7, 1]), crop([7, 1]), crop([7, 2])
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


def test_deterministic_stream_repeats_batch_for_batch(demo_dataset):
    pattern = str(demo_dataset / "train-*.tfrecord")

    def batches(seed):
        ds = dataset.training_dataset(pattern, 4, (48, 64), seed=seed, deterministic=True)
        return [(images.numpy(), masks.numpy()) for images, masks in ds.take(3)]

    run, rerun, other = batches(11), batches(11), batches(12)
    for (images, masks), (images2, masks2) in zip(run, rerun):
        assert np.array_equal(images, images2) and np.array_equal(masks, masks2)
    assert not np.array_equal(run[0][0], other[0][0])
