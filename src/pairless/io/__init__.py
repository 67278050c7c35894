"""Reading and writing images together with their axes and geometry.

The format comes from the path: ``.tif``/``.tiff`` (tifffile), ``.png`` (Pillow), ``.npy`` (NumPy,
never pickled), ``.nii``/``.nii.gz`` (nibabel) and DICOM series (pydicom): a folder of single-slice
files, or one file of it (its whole series is read).  Every image comes back as an :class:`Image`
whose ``axes`` use the letters S (sample), T (time), C (channel), Z, Y, X and end in ``YX``.

Conventions
-----------
- ``voxel_size`` is in mm, one value per spatial axis present (Z, Y, X), in axes order.
- ``affine`` follows nibabel: voxel indices (i, j, k) = (X, Y, Z) to RAS+ world mm.  It is set for
  NIfTI and DICOM, so converting between the two keeps the geometry.
- ``.npy`` holds no axes: 2D is read as YX, 3D as ZYX, 4D as SZYX; other shapes need ``axes=``.
- NIfTI is read as ZYX (TZYX for 4D, YX for 2D) with the stored dtype, or float32 when the file
  has a scale slope/intercept.  DICOM is read as ZYX (YX for one slice), rescaled per slice
  (float32 when any slice has a rescale; else the stored dtype), sorted along the slice normal.
- ``axes=`` describes the layout as stored (``"YXC"`` is fine for an RGB TIFF); the returned image
  moves Y and X last.  RGB(A) PNGs are read as CYX, palette PNGs as their indices (YX).  A TIFF whose
  metadata leaves two axes unnamed (tifffile's generic Q, I, ...) needs ``axes=``.
- Every reader refuses a file whose header states more than :func:`~pairless.io.limits.max_pixels`
  values (default 2**30; :func:`use_max_pixels` changes it) before it allocates anything, and every
  path that is not a regular file or a folder (a FIFO, a device); see :mod:`pairless.io.limits`.

Writing keeps the geometry and stores float32 unless ``dtype`` says otherwise (``dtype=None``
keeps the array's dtype; bool is stored as uint8).  Integer outputs are rounded; values a little
outside the integer range (up to 5 % of it, e.g. a denoiser's overshoot) are clipped, anything
further is refused, and so are NaN/Inf going to integers and values beyond a float dtype's range
(they would be stored as Inf).  NIfTI cannot store float16.  PNG
holds only uint8/uint16: it uses ``dtype`` when that is one of them, else the dtype the image was
read with, else refuses (write .tif to keep float values).  DICOM output is a folder of
single-slice files: a target ending in ``.dcm``, or a target without a known suffix when the image
came from DICOM (so ``out/<input folder name>`` works).  Float data is stored as int16 with a
per-slice rescale slope (exact for integer values within the int16 range); an integer ``dtype``
stores the values themselves.  ``.npy`` keeps values only (no axes or voxel size).  Every write is
atomic and never touches the image's source or a path in ``protect``.
"""

from pairless.io.formats import SUPPORTED, inspect_image, read_image, write_image
from pairless.io.image import AXES_LETTERS, SPATIAL, Image, ImageInfo, validate_axes
from pairless.io.limits import DEFAULT_MAX_PIXELS, use_max_pixels

__all__ = [
    "AXES_LETTERS",
    "DEFAULT_MAX_PIXELS",
    "SPATIAL",
    "SUPPORTED",
    "Image",
    "ImageInfo",
    "inspect_image",
    "read_image",
    "use_max_pixels",
    "validate_axes",
    "write_image",
]
