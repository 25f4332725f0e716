"""Measurements of artifacts: parity against torch, latency on their runtime, and quality of what they generate
(paired PSNR/SSIM, FID, FD-surrogate; see quality.py)."""
