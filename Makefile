# gradmesh: two set-up commands. `make demo` and `make test` install what they need first.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo

.PHONY: setup demo demo-lm test fmt-check clippy clippy-sim-lite unit protocol-deps seed-spread bench-kernels bench-codec-accuracy bench-allreduce bench-torchscript bench-diloco bench-stragglers nat soak fuzz chaos-soak fl-table

setup:
	bash scripts/setup.sh

# Four node processes on loopback train the digits MLP; one is SIGKILLed mid-all-reduce and a
# fresh one joins (docs/operator.md).
demo: setup
	$(CARGO) run --release -p gradmesh-node --bin gradmesh -- demo

# Four node processes on loopback train the small byte-level language model with DiLoCo on
# data/pycorpus.txt; one is SIGKILLed during an outer all-reduce and a fresh one joins (~4 min on
# 2 cores; docs/operator.md).
demo-lm: setup
	$(CARGO) run --release -p gradmesh-node --bin gradmesh -- demo --model transformer

test: setup fmt-check clippy protocol-deps unit

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The simulator without its `fl` feature (no LibTorch). Not in `make test`: it rebuilds the proc
# macros with other features (~57 s on 2 cores) and the 15-minute budget has no room for it;
# `protocol-deps` still proves that configuration never reaches LibTorch (docs/testing.md).
clippy-sim-lite:
	$(CARGO) clippy -p gradmesh-sim --all-targets --no-default-features -- -D warnings

# The protocol core must never depend on an async runtime, the network stack, LibTorch or any of our
# crates but the ground crate; the ground crate, the federated toolkit and the simulator without
# its `fl` feature never reach LibTorch (`make clippy-sim-lite` also compiles the latter).
protocol-deps:
	bash scripts/check-protocol-deps.sh

# Every crate that links LibTorch embeds an rpath to the venv's torch/lib (kernels/libtorch_link.rs),
# and the ground crate, the protocol and the federated toolkit never reach LibTorch, so no test
# binary needs a library path.
unit:
	$(CARGO) test --workspace

# Every learning test (accuracy, loss) under seeds 1..=10 on this CPU: the spread that the
# thresholds beside those assertions are drawn from (docs/testing.md).
seed-spread: setup
	bash scripts/seed_spread.sh

# MLP training steps/s on digits (batch 64; 1 and 2 threads), ours vs PyTorch eager, same run.
bench-kernels: setup
	$(CARGO) run --release -p gradmesh-kernels --example bench_mlp

# The all-reduce of real node processes vs torch.distributed gloo, same sizes, same run
# (docs/benchmarks.md).
bench-allreduce: setup
	$(CARGO) build --release -p gradmesh-node --bin gradmesh
	bash scripts/bench_allreduce.sh target/release/gradmesh 20
	$(CARGO) run --release -p gradmesh-node --example allreduce_floor -- 4 16777216 2
	$(CARGO) run --release -p gradmesh-node --example allreduce_floor -- 2 16777216 2

# A user's TorchScript module (the exported GPT and ResNet examples) trained by one node vs the
# same module in a plain PyTorch loop, same run, same threads (docs/benchmarks.md).
bench-torchscript: setup
	$(CARGO) build --release -p gradmesh-node --bin gradmesh
	target/release/gradmesh bench torchscript --model gpt
	target/release/gradmesh bench torchscript --model cnn --steps 2000

# NAT traversal for real (needs root): a public relay node and two nodes behind NAT routers in
# network namespaces (scripts/nat.sh) train the MLP, behind port-keeping and behind
# port-randomising NATs; prints hole punching, rates and relayed bytes (docs/operator.md,
# "Behind NAT").
nat: setup
	$(CARGO) build --release -p gradmesh-node --bin gradmesh
	bash scripts/nat_mesh.sh target/release/gradmesh 1500

# Three nodes train the tiny transformer synchronously, one of them under a quarter-core CPU quota
# (a cgroup: needs root), one batch per round and then with --compute-time 0.5; the mesh's rate
# and the slow node's share (~2 min; docs/benchmarks.md, "Stragglers").
bench-stragglers: setup
	$(CARGO) build --release -p gradmesh-node --bin gradmesh
	target/release/gradmesh bench stragglers

# Digits test accuracy with every codec vs uncompressed, 4 simulated peers, same steps (~1 min);
# `make bench-codec-accuracy CODEC_ACCURACY_STEPS=N` sets the step count. See docs/benchmarks.md.
CODEC_ACCURACY_STEPS ?= 1500
bench-codec-accuracy: setup
	$(CARGO) run --release -p gradmesh-kernels --example codec_accuracy -- $(CODEC_ACCURACY_STEPS)

# Transformer loss vs bytes/token, equal tokens: sync, DiLoCo H=10/50 (+int8/fp16), 1 process (~15 min).
bench-diloco: setup
	$(CARGO) run --release -p gradmesh-node --example diloco_table

# Fuzz every decoder the network reaches for 60 s each (needs nightly and `cargo install
# cargo-fuzz`): the wire decoder (fuzz/) and the node's frames, lane records, lane offers and
# sealed announcements (fuzz/node/); see docs/fuzzing.md. FUZZ_SECONDS changes the time.
FUZZ_SECONDS ?= 60
fuzz: setup
	cd fuzz && cargo +nightly fuzz run decode -- -max_total_time=$(FUZZ_SECONDS)
	for target in frame lane_records offer announcement; do \
	  LD_LIBRARY_PATH=$(CURDIR)/.venv/lib/python3.11/site-packages/torch/lib \
	    cargo +nightly fuzz run -O --fuzz-dir fuzz/node $$target -- -max_total_time=$(FUZZ_SECONDS); \
	done

# Long runs of the protocol's seeded fault schedules (make test runs 2000).
soak:
	GRADMESH_SCHEDULES=$${GRADMESH_SCHEDULES:-20000} $(CARGO) test --release -p gradmesh-protocol --test invariants -- --nocapture

# Long runs of the simulator's seeded chaos scenarios: real protocol peers on the simulated
# network (make test runs 100); see docs/simulator.md.
chaos-soak:
	GRADMESH_CHAOS=$${GRADMESH_CHAOS:-2000} $(CARGO) test --release -p gradmesh-sim --test chaos -- --nocapture

# The federated reproduction table of docs/federated.md: every scenario in scripts/fl_table.sh,
# seed 1, outputs in out/fl/<scenario>/ (dev profile: LibTorch and the other dependencies are
# optimized, see [profile.dev.package."*"] in Cargo.toml).
fl-table: setup
	$(CARGO) build -p gradmesh-sim
	bash scripts/fl_table.sh target/debug/gradmesh-sim
