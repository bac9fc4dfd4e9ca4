# Rempart: the commands a developer, an operator and CI use.
#
#   make run     install what is missing, build (release), start the demo: two stand-in
#                datacenters (ent-origin) and Rempart in the foreground with conf/rempart.yaml
#   make test    install what is missing, build (debug: the integration tests run
#                target/debug/rempart) and run every test of the workspace
#   make bench   Rempart against NGINX and HAProxy on this machine (bench/run.sh), then the
#                three side by side in eight scenarios, rounds alternating: plain HTTP/1.1,
#                refusal floods (banned, rate-limited), churn of client addresses, TLS +
#                HTTP/2, TLS handshakes, a realistic policy, two workers (bench/scenarios.sh),
#                then the shield's cost: memory with a million client addresses, req/s with
#                and without limits (bench/shield.sh), then what connections cost against
#                NGINX and HAProxy: memory for 10,000 idle keep-alive connections (HTTP/1.1,
#                TLS, HTTP/2) and CPU under five HTTP/2 attacks (bench/connections.sh).
#                BENCH_BIN_DIR=DIR runs the binaries in DIR instead of building
#   make check   formatting and clippy, warnings as errors
#   make deps    install the missing system tools (apt-get, only when one is missing)
#   make build   release build of the workspace
#   make clean   remove build output and benchmark output

CARGO ?= cargo

.PHONY: run test bench check deps build clean

deps:
	@.ci/install-deps.sh

build:
	$(CARGO) build --release --workspace

run: deps build
	@bash conf/demo.sh

test: deps
	$(CARGO) build --workspace
	$(CARGO) test --workspace

bench:
	@bash bench/run.sh
	@bash bench/scenarios.sh
	@bash bench/shield.sh
	@bash bench/connections.sh

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf bench/out
