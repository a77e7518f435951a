/work/main/target-bench/debug/deps/xtask-3c367b647c7d104e.d: xtask/src/main.rs

/work/main/target-bench/debug/deps/xtask-3c367b647c7d104e: xtask/src/main.rs

xtask/src/main.rs:

# env-dep:CARGO_MANIFEST_DIR=/tmp/bench-tree/xtask
# env-dep:CARGO_PKG_VERSION=0.1.0
