"""Counting what crosses every GroupByKey of a pipeline (Reshuffle, CoGroupByKey and the file
sinks group through it too): each GroupByKey's input is encoded with Beam's default coder (what
a runner would write to its shuffle for these untyped collections) and its bytes are counted
per GroupByKey in the ``shuffle_bytes`` namespace."""
from __future__ import annotations

import contextlib

import apache_beam as beam
from apache_beam import coders
from apache_beam.metrics import Metrics

NAMESPACE = "shuffle_bytes"
_CODER = coders.registry.get_coder(object)


def _measure(element, key):
    Metrics.counter(NAMESPACE, key).inc(len(_CODER.encode(element)))
    return element


@contextlib.contextmanager
def counting_shuffles():
    original = beam.Pipeline.apply

    def apply(self, transform, pvalueish=None, label=None):
        # Beam re-enters apply() once a label is set; measure on that last call only.
        if label is None and isinstance(transform, beam.GroupByKey) and isinstance(pvalueish, beam.pvalue.PCollection):
            name = transform.label
            key = f"{self._current_transform().full_label}/{name}".lstrip("/")
            pvalueish = original(self, beam.Map(_measure, key), pvalueish, label=f"{name}Measured")
            return original(self, transform, pvalueish)
        return original(self, transform, pvalueish, label)

    beam.Pipeline.apply = apply
    try:
        yield
    finally:
        beam.Pipeline.apply = original


def shuffle_bytes(result) -> dict:
    """{GroupByKey's full label: bytes} from a finished pipeline's counters."""
    return {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]
            if c.key.metric.namespace == NAMESPACE}
