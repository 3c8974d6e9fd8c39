# Every command a Tether developer needs. Each installs what it needs itself.
.PHONY: help build test demo cluster cluster-binaries bench fmt lint ci images docs

help:
	@echo "make demo              build everything, start a local cluster, kas and agentk; Ctrl-C stops all"
	@echo "make test              build the cluster binaries and run the whole test suite"
	@echo "make cluster           run only the local cluster (kubeconfig: target/cluster/kubeconfig)"
	@echo "make bench             run the benchmarks (see BENCHMARKS.md)"
	@echo "make images            OCI images of kas and agentk in target/images (no daemon), checked"
	@echo "make fmt | make lint   format | rustfmt check and clippy -D warnings"
	@echo "make docs              the documentation book in docs/book (mdBook), links checked"
	@echo "make cluster-binaries  build etcd, kube-*, kwok; install kubectl and helm (cached)"

cluster-binaries:
	@bash scripts/cluster-binaries.sh >/dev/null

build:
	cargo build --workspace --bins

test:
	bash scripts/test.sh

demo:
	bash scripts/demo.sh

cluster: cluster-binaries
	TETHER_KUBE_BIN="$$(bash scripts/cluster-binaries.sh)" cargo run -q -p tether-testenv --bin tether-cluster -- --dir target/cluster

bench:
	bash scripts/bench.sh

images:
	bash scripts/install-services.sh
	bash scripts/build-images.sh

docs:
	bash scripts/docs.sh

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

ci: lint test
