"""Results in the formats other systems read: DICOM Segmentation and Structured Report objects.

The entry point is :func:`cspine.outputs.dicom_results.write_dicom_results` (and
:func:`~cspine.outputs.dicom_results.write_dicom_results_for_volume` for a canonical volume and its
stage-1 label map). highdicom is imported only by these modules.
"""
