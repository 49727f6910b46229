# Two entry points that do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test setup bench screenshots clean-venv

$(STAMP): pyproject.toml constraints.txt scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh

setup: $(STAMP)

# Opens napari with the plugin docked, an image loaded and the default model selected.
# Without a display it runs under Xvfb, saves a screenshot and exits.
demo: $(STAMP)
	@if [ -n "$$DISPLAY" ] || [ -n "$$WAYLAND_DISPLAY" ]; then \
		$(VENV)/bin/lesion-diffkd demo $(DEMO_ARGS); \
	else \
		echo "no display: running the demo under Xvfb and saving demo-screenshot.png"; \
		xvfb-run -a -s "-screen 0 1600x1000x24" $(VENV)/bin/lesion-diffkd demo --screenshot demo-screenshot.png $(DEMO_ARGS); \
	fi

test: $(STAMP)
	$(PY) -m pytest

# Regenerates every figure of docs/benchmarks.md (reduced image counts, under 30 min on the
# 2-core CPU; see benchmarks/run_all.py and docs/reproducing.md).
bench: $(STAMP)
	nice -n 5 $(PY) benchmarks/run_all.py $(BENCH_ARGS)

screenshots: $(STAMP)
	xvfb-run -a -s "-screen 0 1366x768x24" $(PY) scripts/make_screenshots.py

clean-venv:
	rm -rf $(VENV)
