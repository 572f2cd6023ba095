# The two commands of the README: `make demo` and `make test`. Both set up .venv first (idempotent).
PY := .venv/bin/python

.PHONY: setup demo test test-fast bench
setup:
	bash scripts/setup_env.sh

demo: setup
	.venv/bin/scalecap demo --out scalecap-demo

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

# seconds: no model, no server, no browser
test-fast:
	$(PY) -m pytest -q -m "not slow and not vllm and not ray and not browser"

bench:
	$(PY) bench/bench_pipeline.py
