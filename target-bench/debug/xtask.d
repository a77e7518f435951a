/work/main/target-bench/debug/xtask: /tmp/bench-tree/xtask/src/main.rs
