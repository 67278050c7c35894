"""Image-quality metrics (``image``) and PET phantom metrics (``pet``)."""

from pairless.metrics.image import image_metrics, nrmse, psnr, si_psnr, ssim

__all__ = ["image_metrics", "nrmse", "psnr", "si_psnr", "ssim"]
