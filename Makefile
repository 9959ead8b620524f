# FreeFlow: `make up` runs it on this host, `make test` runs every test, `make down` removes what up made.
SHELL := /bin/bash
PYTEST_ARGS ?=

.PHONY: up test unit down prereqs dockerd images plugin lint bench

prereqs:
	scripts/install-prereqs.sh

dockerd: prereqs
	scripts/start-dockerd.sh

images: dockerd
	scripts/build-images.sh

plugin: images
	scripts/build-plugin.sh

up: plugin
	@echo
	@echo "FreeFlow is running. Try:"
	@echo "  docker network create -d freeflow demo"
	@echo "  docker run -d --name a --network demo freeflow-tools sleep infinity"
	@echo "  docker run --rm --network demo freeflow-tools ping -c 3 a"

test: up
	python3 -m pytest $(PYTEST_ARGS)

unit: prereqs
	python3 -m pytest tests/unit $(PYTEST_ARGS)

lint:
	ruff check .
	mypy freeflow plugin router shm client config orchestrator lab bench

bench: up
	freeflow bench

down:
	scripts/down.sh
