//! The real `orgo` Python SDK (0.0.47 from PyPI, unchanged) against a real `orgo-gateway` process
//! on real desktops: `sdk_check.py` drives every SDK method and checks its effect.

mod common;

#[test]
fn the_orgo_sdk_works_unchanged() {
    let dir = common::scratch("sdk");
    let port = common::free_port();
    let env = common::gateway_env(&dir, port);
    let key = common::new_key(&env, "sdk", "free");
    let served = common::Served::start(&env, port);
    common::sdk::check(&served.base, &key);
    let _ = std::fs::remove_dir_all(&dir);
}
