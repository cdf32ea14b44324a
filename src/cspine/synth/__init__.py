"""Synthetic data: a procedural cervical spine written as the real datasets are written.

* :mod:`cspine.synth.phantom` -- :func:`~cspine.synth.phantom.make_phantom`: one CT study in memory
  (canonical orientation, labels C1..T2, fractures with their exact voxel mask and boxes).
* :mod:`cspine.synth.anatomy`, :mod:`cspine.synth.sdf` -- vertebra shapes as signed distance functions (mm).
* :mod:`cspine.synth.fractures` -- fracture levels (RSNA frequencies) and kinds.
* :mod:`cspine.synth.ct_writer` -- :func:`~cspine.synth.ct_writer.write_ct_series`: DICOM as scanners write
  it.
* :mod:`cspine.synth.ct` -- :func:`~cspine.synth.ct.generate_ct_dataset`: the RSNA 2022 layout on disk.
* :mod:`cspine.synth.xray` -- lateral radiographs (DRRs) for normal / fracture / dislocation.
* :mod:`cspine.synth.preview` -- PNG previews to look at.

Everything measured on these data is *synthetic* and must be labelled so.
"""
