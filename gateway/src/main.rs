//! `orgo-gateway`: the public REST API of orgo-rs. Its routes, accounts, state and runtimes arrive
//! with their own issue; until then the binary only says so, so the workspace builds end to end.

fn main() {
    eprintln!("orgo-gateway: the REST gateway is not built yet; see the project's issues.");
    std::process::exit(2);
}
