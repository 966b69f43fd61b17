# The two set-up commands of the README; each works on a fresh machine.
#   make demo   installs the package and runs the quickstart notebook against the capture server
#   make test   installs what the tests need (Debian packages too) and runs the whole suite
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench clean

# Quiet (@): what `make demo` prints is the demo's own report, as the README shows it.
$(PY):
	@python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip

# The [demo] extra (papermill, a kernel, pandas, matplotlib) and JupyterLab, to open the
# notebooks afterwards: .venv/bin/jupyter lab notebooks/
demo: $(PY)
	@$(PY) -m pip install -q -e '.[demo]' jupyterlab
	@$(VENV)/bin/smtp-magic demo

test:
	bash scripts/test.sh

bench: $(PY)
	$(PY) -m pip install -q -e '.[all]' -r benchmarks/requirements.txt
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
