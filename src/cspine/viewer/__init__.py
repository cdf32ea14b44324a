"""cspine.viewer: a local web page to look at what the CT model saw (``cspine serve``).

* :mod:`cspine.viewer.volumes` writes the files the page renders (CT, C1..C7 label map, Grad-CAM
  heat map as NIfTI) from a canonical :class:`~cspine.io.volume.Volume`;
* :mod:`cspine.viewer.store` lists the studies of results folders under opaque keys;
* :mod:`cspine.viewer.uploads` checks and unpacks uploaded zips of DICOM files;
* :mod:`cspine.viewer.jobs` runs uploads and view-file builds through the model, one at a time;
* :mod:`cspine.viewer.app` builds the FastAPI application (routes in :mod:`cspine.viewer.routes`,
  page and the vendored NiiVue bundle in ``static/``).

Only :mod:`~cspine.viewer.volumes` is imported by other code; the web parts need the ``fastapi`` and
``uvicorn`` packages.
"""

from __future__ import annotations
