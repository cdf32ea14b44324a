"""Reading studies and images: DICOM series, NIfTI volumes and masks, the RSNA layout, radiographs."""
