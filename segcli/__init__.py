"""segcli: every command's flags, settings and their defaults, importing neither TensorFlow nor Beam.

One module per command holds its settings dataclass (each default with its reason, validated in
``__post_init__``, keyword construction only) and the ``make_parser()`` whose defaults are read
from it. The jobs (``pipelines.*``, ``segmodel.train``, ``segmodel.evaluate``) parse their
command lines with these parsers, and ``segpipe <command> --help`` or a bad flag is answered from
here in a fraction of a second, before TensorFlow or Beam load (``segcli.main``).

Layering: ``segformat`` <- ``segcli`` <- ``segmodel`` <- ``pipelines``.
"""
