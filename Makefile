# Entry points; each target is a thin wrapper over a script or cargo command documented in README.md.
.PHONY: run run-executor test guests bench-executor bench-real-guests bench-coordinator \
	bench-coordinator-load \
	image image-coordinator images kind-load k8s-apply

# Container engine (docker or podman), image tags, the cargo profile of the static binaries
# (dist: optimised and stripped, what we ship) and the kind cluster the images are loaded into.
CONTAINER_ENGINE ?= docker
IMAGE ?= executor-demo/executor:demo
COORDINATOR_IMAGE ?= executor-demo/coordinator:demo
PROFILE ?= dist
KIND_CLUSTER ?= kind
image_env = CONTAINER_ENGINE=$(CONTAINER_ENGINE) IMAGE=$(IMAGE) COORDINATOR_IMAGE=$(COORDINATOR_IMAGE) PROFILE=$(PROFILE)

## The main job: the coordinator runs the sample tasks on the local backend and prints a table.
run:
	cargo run --release -p coordinator -- --once

## One task the way a Kubernetes Job runs it: the executor on the fib sample.
run-executor:
	cargo run --release -p executor -- --wasm-path host/wasm/fib.wasm \
		--args-json '{"entry":"fib","args":[12]}' --output-path host/shared/result.json

## The whole test suite (installs what it needs).
test:
	scripts/test

## Rebuilds the guest modules into host/wasm and testdata/wasm.
guests:
	scripts/build-guests

## Executor start-up and speed against the wasmtime CLI and native code (docs/PERFORMANCE.md).
bench-executor:
	scripts/bench-executor

## Cold compiles and warm starts of real toolchain output (Go, C, Rust) against the wasmtime CLI.
bench-real-guests:
	scripts/bench-real-guests

## Coordinator throughput, overhead and memory over its HTTP API (docs/PERFORMANCE.md).
bench-coordinator:
	cargo bench -p coordinator --bench throughput

## The coordinator at load: wrk single POSTs from 4 connections, the batch endpoint, 1M tasks
## and the memory after, on the dist build (docs/PERFORMANCE.md, "At load").
bench-coordinator-load:
	cargo build --profile dist -p coordinator --locked
	scripts/bench-coordinator-load target/dist/coordinator

## The executor image: a static (musl) executor FROM scratch, tagged $(IMAGE) (docs/KUBERNETES.md).
image:
	$(image_env) scripts/build-image executor

## The coordinator image: a static coordinator and the sample mirror FROM scratch, tagged $(COORDINATOR_IMAGE).
image-coordinator:
	$(image_env) scripts/build-image coordinator

## Both images.
images: image image-coordinator

## Copies both images into the kind cluster $(KIND_CLUSTER) (podman: through an image archive, under
## the docker.io/ names scripts/build-image gives them).
kind-load:
ifeq ($(CONTAINER_ENGINE),docker)
	kind load docker-image --name $(KIND_CLUSTER) $(IMAGE) $(COORDINATOR_IMAGE)
else
	set -e; dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; \
	$(CONTAINER_ENGINE) save -m -o "$$dir/images.tar" docker.io/$(IMAGE) docker.io/$(COORDINATOR_IMAGE); \
	kind load image-archive --name $(KIND_CLUSTER) "$$dir/images.tar"
endif

## The seed's demo Job (k8s/job.yaml: fib(12) on host/ through hostPath); then scripts/tail-k8s.sh.
k8s-apply:
	kubectl apply -f k8s/job.yaml
