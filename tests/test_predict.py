"""segmodel.predict.TiledSegmenter's bookkeeping with a tiny real Keras model (the blending
itself is checked against an independent blend in test_tiled_segmentation.py)."""
import numpy as np


def test_segmenter_returns_outcomes_in_job_order_across_shapes_and_failures():
    """Jobs of different tile shapes finish out of order and a failed read finishes at once;
    the outcomes still come back in the order of the jobs (the handler zips them with its chunks)."""
    import keras

    from segmodel.predict import TiledSegmenter
    images = keras.Input((None, None, 3))
    model = keras.Model(images, keras.layers.Conv2D(3, 1, kernel_initializer="ones")(images))

    class Job:
        core = None

        def __init__(self, height, width, fail=False):
            self.shape, self.fail = (height, width), fail

        def open(self):
            if self.fail:
                raise OSError("unreadable")
            return self.shape

        def read(self, row, col, height, width):
            return np.full((height, width, 3), sum(self.shape) % 200, np.uint8), None

        def close(self):
            pass

    jobs = [Job(200, 300), Job(40, 50), Job(10, 10, fail=True), Job(64, 64), Job(130, 70)]
    outcomes = TiledSegmenter(model, 3, tile=64, overlap=16, batch_size=5).segment(
        jobs, lambda job, mask, stats, error: (job, None if mask is None else mask.shape, error))
    assert [job for job, _, _ in outcomes] == jobs
    assert [shape for _, shape, _ in outcomes] == [(200, 300), (40, 50), None, (64, 64), (130, 70)]
    assert isinstance(outcomes[2][2], OSError) and all(e is None for i, (_, _, e) in enumerate(outcomes) if i != 2)
