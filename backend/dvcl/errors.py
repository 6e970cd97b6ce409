"""Exceptions raised for bad input.

Every error a user can cause (a corrupt file, a label map on the wrong grid, an empty folder ...)
raises a subclass of :class:`DVCLError` with a one-line message that names the file and the problem.
The CLI prints that line and exits with status 2; the Slicer module shows it in a message box.
"""

from __future__ import annotations


class DVCLError(Exception):
    """Base class of all errors caused by user input or configuration."""


class ImageReadError(DVCLError):
    """A file is missing, corrupt, or not an image SimpleITK can read."""


class DimensionError(DVCLError):
    """An image is not a 3D scalar volume (2D, 4D, or multi-component)."""


class GeometryMismatchError(DVCLError):
    """A label map does not lie on the grid of its image (size, spacing, origin or direction)."""


class LabelValueError(DVCLError):
    """A label map holds values that are not in the preset's label table."""


class NotCTError(DVCLError):
    """Intensities do not look like CT in Hounsfield units (all zeros, MR-like range)."""


class DatasetError(DVCLError):
    """A data set folder is empty, has an image without label, or a malformed dataset.json."""


class PresetError(DVCLError):
    """An unknown preset name or an invalid custom preset."""


class ModelError(DVCLError):
    """A model package is missing, corrupt, or does not match what it is used for."""


class ConfigError(DVCLError):
    """An invalid option value or combination."""


class ResourceLimitError(DVCLError):
    """An input would need more memory than allowed (a header claiming billions of voxels, an absurd spacing)."""


class DicomSeriesError(ImageReadError):
    """A DICOM series with missing, duplicate, unevenly spaced or tilted slices, or several series in one folder."""


class OutputWriteError(DVCLError):
    """An output cannot be written: disk full, read-only or foreign folder, or a write that did not verify."""


class OutputExistsError(DVCLError):
    """An output exists and --overwrite was not given."""


class DeviceError(DVCLError):
    """A device was asked for that is not available (e.g. cuda without a GPU in strict mode)."""
