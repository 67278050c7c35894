"""Denoising methods: classical filters, Noise2Void, ISCL and supervised references."""
