# Rempart: the commands a developer, an operator and CI use.
#
#   make run     install what running needs when missing, build (release), start the demo:
#                two stand-in datacenters (ent-origin) and Rempart in the foreground with
#                conf/rempart.yaml
#   make cluster the same with two Rempart nodes sharing one redis-server (installed when
#                missing): conf/cluster-demo.sh, conf/cluster.yaml
#   make test    install what is missing, build (debug: the integration tests run
#                target/debug/rempart) and run every test of the workspace
#   make bench   Rempart against NGINX and HAProxy on this machine (bench/run.sh), then the
#                three side by side in eight scenarios, rounds alternating: plain HTTP/1.1,
#                refusal floods (banned, rate-limited), churn of client addresses, TLS +
#                HTTP/2, TLS handshakes, a realistic policy, two workers (bench/scenarios.sh),
#                then the shield's cost: memory with a million client addresses, req/s with
#                and without limits (bench/shield.sh), then what connections cost against
#                NGINX and HAProxy: memory for 10,000 idle keep-alive connections (HTTP/1.1,
#                TLS, HTTP/2) and CPU under five HTTP/2 attacks (bench/connections.sh), then
#                a node with a cluster limit against a local one, and the store's round trips
#                under a flood (bench/cluster.sh).
#                BENCH_BIN_DIR=DIR runs the binaries in DIR instead of building
#   make deb     the Debian package, target/debian/rempart_VERSION_ARCH.deb (dist build,
#                systemd unit, configuration in /etc/rempart, rempart-upgrade): deploy/debian/.
#                DEB_PROFILE=release (or dev) packages a quicker build, for trying the package
#   make check   formatting and clippy, warnings as errors
#   make deps    install the missing system tools (apt-get, only when one is missing)
#   make build   release build of the workspace
#   make clean   remove build output and benchmark output

CARGO ?= cargo
# The cargo profile of the binary `make deb` packages: dist is what ships.
DEB_PROFILE ?= dist

.PHONY: run cluster test bench deb check deps build clean

deps:
	@.ci/install-deps.sh

build:
	@.ci/install-deps.sh --run
	$(CARGO) build --release --workspace

run: build
	@bash conf/demo.sh

cluster: build
	@bash conf/cluster-demo.sh

test: deps
	$(CARGO) build --workspace
	$(CARGO) test --workspace

deb: deps
	@CARGO="$(CARGO)" deploy/debian/build-deb.sh --profile $(DEB_PROFILE)

bench:
	@bash bench/run.sh
	@bash bench/scenarios.sh
	@bash bench/shield.sh
	@bash bench/connections.sh
	@bash bench/cluster.sh

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf bench/out
