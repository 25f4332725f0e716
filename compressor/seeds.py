"""Seed offsets: every use of prior samples gets its own, so no two uses ever share latents.

The parity check never sees calibration inputs, the benchmark never sees parity inputs, and so on; they
all live here so a reader can see they are distinct. Each is added to the run's seed.
"""

PARITY_SEED_OFFSET = 1_000
BENCHMARK_SEED_OFFSET = 2_000
CALIBRATION_SEED_OFFSET = 3_000
SENSITIVITY_SEED_OFFSET = 4_000
REWRITE_CHECK_SEED_OFFSET = 7_000
QUALITY_SEED_OFFSET = 8_000  # latents every artifact and the reference generate for FID, PSNR, SSIM, gallery
QUALITY_REFERENCE_SEED_OFFSET = 9_000  # the reference model's own samples that FID is measured against
QAT_TRAIN_SEED_OFFSET = 100_000  # one seed per step from here: steps never reuse another use's latents
BENCHMARK_QUALITY_SEED_OFFSET = 5_000  # benchmarks/quantize_cpu.py's quality latents
QAT_CHECK_SEED_OFFSET = 6_000
DISTILL_CHECK_SEED_OFFSET = 10_000  # the distill stage's held-out latents
DISTILL_TRAIN_SEED_OFFSET = 1_000_000  # one seed per distillation step from here (never a QAT step's)
PRUNE_TUNE_SEED_OFFSET = 2_000_000  # one seed per fine-tuning step between magnitude pruning steps
PRUNE_CHECK_SEED_OFFSET = 11_000  # held-out latents that score each magnitude pruning step
