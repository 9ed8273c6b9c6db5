# Shortcuts for developers; the scripts do the work (a fresh Debian may lack make).
.PHONY: run test lint format bench
run:
	scripts/run
test:
	scripts/test
lint:
	scripts/bootstrap --test && scripts/lint
format:
	.venv/bin/ruff format src tests benchmarks && .venv/bin/ruff check --fix src tests benchmarks
bench:
	.venv/bin/python benchmarks/hub.py
