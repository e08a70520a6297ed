"""Pinning: every image reference in the repository names an in-repo image's current tag and
its digest (``pkgtool lint`` checks it; ``pkgtool update-hashes`` makes it so).

* :mod:`~pkgtool.pin.producers`: what the repository builds, by repository name: packages
  (build.yml), the Debian base (base.yml) and kernels (kernel.yml), each with its current tag
  computed from its inputs, and a way to build it when the registry lacks it;
* :mod:`~pkgtool.pin.refs`: where the references are: ``FROM``, ``COPY --from=`` and
  ``RUN --mount=from=`` in package Dockerfiles, and the image fields of image YAMLs
  (``examples/``), each with file and line so it can be reported and rewritten in place;
* :mod:`~pkgtool.pin.lint` and :mod:`~pkgtool.pin.update`: the two commands.
"""
